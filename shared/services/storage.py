"""Storage, for the processor (dataset downloads, artifact uploads) and get-job (adapter
downloads): Supabase Storage or an S3-compatible store, as configured."""

from __future__ import annotations

import functools

from shared.config import StorageSettings, load
from shared.storage import S3DatasetStorage, SupabaseDatasetStorage, create_s3_client


@functools.cache
def storage() -> S3DatasetStorage | SupabaseDatasetStorage:
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
            ),
            artifacts_bucket=settings.artifacts_bucket,
        )
    assert settings.supabase_url is not None  # noqa: S101
    assert settings.supabase_service_role_key is not None  # noqa: S101
    return SupabaseDatasetStorage.connect(
        settings.supabase_url,
        settings.supabase_service_role_key.get_secret_value(),
        artifacts_bucket=settings.artifacts_bucket,
    )
