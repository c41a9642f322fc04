"""Signed download URLs for dataset files, from Supabase Storage or any S3-compatible store."""

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
    "DEFAULT_BUCKET",
    "KNOWN_BUCKETS",
    "SIGNED_URL_TTL_SECONDS",
    "DatasetStorage",
    "S3Client",
    "S3DatasetStorage",
    "SupabaseDatasetStorage",
    "create_s3_client",
    "resolve_bucket",
]
