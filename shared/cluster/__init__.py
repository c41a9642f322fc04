"""Talking to the GPU cluster that runs the LoRA trainings.

The processor depends on :class:`TrainingCluster` and the models here only; which backend
implements it (the REST contract in openapi/cluster.yaml, or Ray's Jobs REST API) is a matter of
configuration (GPU_CLUSTER_BACKEND).
"""

from shared.cluster.interface import TrainingCluster
from shared.cluster.models import (
    MAX_HYPERPARAMETERS_BYTES,
    CancelResult,
    ClusterJobError,
    ClusterJobState,
    ClusterJobStatus,
    GpuConfig,
    MetricsPoint,
    SubmitRequest,
    SubmitResult,
)
from shared.cluster.ray import RayJobsCluster
from shared.cluster.rest import RestTrainingCluster

__all__ = [
    "MAX_HYPERPARAMETERS_BYTES",
    "CancelResult",
    "ClusterJobError",
    "ClusterJobState",
    "ClusterJobStatus",
    "GpuConfig",
    "MetricsPoint",
    "RayJobsCluster",
    "RestTrainingCluster",
    "SubmitRequest",
    "SubmitResult",
    "TrainingCluster",
]
