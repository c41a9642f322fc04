"""Signed URLs for dataset files and a run's artifacts, from Supabase Storage or any S3-compatible
store."""

from shared.storage.artifacts import (
    ARTIFACTS_BUCKET,
    ArtifactStorage,
    adapter_location,
    artifact_location,
)
from shared.storage.base import (
    DEFAULT_BUCKET,
    KNOWN_BUCKETS,
    SIGNED_URL_TTL_SECONDS,
    DatasetStorage,
    resolve_bucket,
)
from shared.storage.s3 import S3Client, S3DatasetStorage, create_s3_client
from shared.storage.supabase_storage import SupabaseDatasetStorage

__all__ = [
    "ARTIFACTS_BUCKET",
    "DEFAULT_BUCKET",
    "KNOWN_BUCKETS",
    "SIGNED_URL_TTL_SECONDS",
    "ArtifactStorage",
    "DatasetStorage",
    "S3Client",
    "S3DatasetStorage",
    "SupabaseDatasetStorage",
    "adapter_location",
    "artifact_location",
    "create_s3_client",
    "resolve_bucket",
]
