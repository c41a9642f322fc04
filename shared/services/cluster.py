"""The GPU cluster client, made per call: its connections belong to that call's event loop.

GPU_CLUSTER_BACKEND picks the adapter (`rest`, the default, or `ray`); the processor and the
functions see only :class:`TrainingCluster`.
"""

from __future__ import annotations

import functools

from shared.cluster import RayJobsCluster, RestTrainingCluster, TrainingCluster
from shared.config import ClusterSettings, load


@functools.cache
def cluster_settings() -> ClusterSettings:
    return load(ClusterSettings)


def cluster() -> TrainingCluster:
    settings = cluster_settings()
    if settings.gpu_cluster_backend == "ray":
        return RayJobsCluster(
            settings.gpu_cluster_api_url,
            settings.gpu_cluster_api_key.get_secret_value(),
            entrypoint=settings.ray_trainer_entrypoint,
            tail_lines=settings.ray_log_tail_lines,
            connect_timeout=settings.gpu_cluster_connect_timeout_seconds,
            read_timeout=settings.gpu_cluster_read_timeout_seconds,
            max_attempts=settings.gpu_cluster_max_attempts,
            max_connections=settings.processor_concurrency,
        )
    return RestTrainingCluster(
        settings.gpu_cluster_api_url,
        settings.gpu_cluster_api_key.get_secret_value(),
        connect_timeout=settings.gpu_cluster_connect_timeout_seconds,
        read_timeout=settings.gpu_cluster_read_timeout_seconds,
        max_attempts=settings.gpu_cluster_max_attempts,
        max_connections=settings.processor_concurrency,
    )
