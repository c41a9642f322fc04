"""The GPU cluster client, made per call: its connections belong to that call's event loop."""

from __future__ import annotations

import functools

from shared.cluster import RestTrainingCluster, TrainingCluster
from shared.config import ClusterSettings, load


@functools.cache
def cluster_settings() -> ClusterSettings:
    return load(ClusterSettings)


def cluster() -> TrainingCluster:
    settings = cluster_settings()
    return RestTrainingCluster(
        settings.gpu_cluster_api_url,
        settings.gpu_cluster_api_key.get_secret_value(),
        connect_timeout=settings.gpu_cluster_connect_timeout_seconds,
        read_timeout=settings.gpu_cluster_read_timeout_seconds,
        max_attempts=settings.gpu_cluster_max_attempts,
        max_connections=settings.processor_concurrency,
    )
