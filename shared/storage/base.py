"""Which bucket a dataset lives in, and the interface every storage adapter offers."""

from __future__ import annotations

from typing import Final, Protocol

from shared.errors import DatasetFileMissing, UnknownBucket
from shared.models import DEFAULT_BUCKET as DEFAULT_BUCKET

# App uploads land in the default bucket; `training-files` holds what the data bridge imports.
KNOWN_BUCKETS: Final = (DEFAULT_BUCKET, "training-files")

# The cluster may queue a job for hours before it downloads the dataset.
SIGNED_URL_TTL_SECONDS: Final = 24 * 60 * 60


def resolve_bucket(storage_bucket: str | None) -> str:
    """Return the bucket a dataset's file lives in, given its `datasets.storage_bucket` value.

    NULL means the app's default bucket. Any other name outside :data:`KNOWN_BUCKETS` is refused:
    signing a URL for an arbitrary bucket would let a dataset row point the cluster at any file
    the service role can read.
    """
    if storage_bucket is None:
        return DEFAULT_BUCKET
    if storage_bucket not in KNOWN_BUCKETS:
        known = ", ".join(repr(name) for name in KNOWN_BUCKETS)
        raise UnknownBucket(
            f"The dataset's storage bucket {storage_bucket!r} is not one this runner uses "
            f"(known buckets: {known})."
        )
    return storage_bucket


def validate_path(bucket: str, path: str) -> str:
    """Return `path` as an object key, refusing keys no dataset upload could have produced.

    A leading slash is dropped, as Supabase Storage does, so both backends read the same key.
    Dot segments are refused rather than normalized: the backends would resolve them
    differently, and a dataset row should not be able to walk out of its folder.
    """
    key = path.lstrip("/")
    segments = key.split("/")
    if not key.strip() or "." in segments or ".." in segments:
        raise DatasetFileMissing(
            f"The dataset's storage path {path!r} in bucket {bucket!r} is not a valid file path."
        )
    return key


class DatasetStorage(Protocol):
    """Signs download URLs for dataset files, so the GPU cluster can fetch them without keys."""

    def signed_url(
        self, bucket: str | None, path: str, expires_in: int = SIGNED_URL_TTL_SECONDS
    ) -> str:
        """Return an absolute URL that downloads `path` from `bucket` for `expires_in` seconds.

        `bucket` follows :func:`resolve_bucket` (None means the default bucket).

        Raises:
            UnknownBucket: the bucket is not one of :data:`KNOWN_BUCKETS`; nothing is sent.
            DatasetFileMissing: the file is not in the bucket.
            StorageError: the storage service could not be used.
        """
        ...
