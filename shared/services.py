"""The production wiring: clients built once per process from the environment.

Cloud Functions reuse a process across invocations, so the database pool, the storage client and
the token verifier (with its cached signing keys) are kept; the cluster client is made per cycle
(or per cancel) because its connections belong to that call's event loop.
"""

from __future__ import annotations

import functools

from shared.auth import TokenVerifier
from shared.cluster import RestTrainingCluster, TrainingCluster
from shared.config import (
    ApiSettings,
    AuthSettings,
    ClusterSettings,
    DatabaseSettings,
    ProcessorSettings,
    StorageSettings,
    load,
)
from shared.db import Database, database_from_settings
from shared.storage import (
    DatasetStorage,
    S3DatasetStorage,
    SupabaseDatasetStorage,
    create_s3_client,
)


@functools.cache
def database() -> Database:
    return database_from_settings(load(DatabaseSettings))


@functools.cache
def storage() -> DatasetStorage:
    settings = load(StorageSettings)
    if settings.storage_backend == "s3":
        assert settings.s3_access_key_id is not None  # noqa: S101 - checked by the settings
        assert settings.s3_secret_access_key is not None  # noqa: S101
        return S3DatasetStorage(
            create_s3_client(
                endpoint_url=settings.s3_endpoint_url,
                region=settings.s3_region,
                access_key_id=settings.s3_access_key_id,
                secret_access_key=settings.s3_secret_access_key.get_secret_value(),
            )
        )
    assert settings.supabase_url is not None  # noqa: S101
    assert settings.supabase_service_role_key is not None  # noqa: S101
    return SupabaseDatasetStorage.connect(
        settings.supabase_url, settings.supabase_service_role_key.get_secret_value()
    )


@functools.cache
def processor_settings() -> ProcessorSettings:
    return load(ProcessorSettings)


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
    )


@functools.cache
def api_settings() -> ApiSettings:
    return load(ApiSettings)


@functools.cache
def token_verifier() -> TokenVerifier:
    return TokenVerifier.from_settings(load(AuthSettings))
