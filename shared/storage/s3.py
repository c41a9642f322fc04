"""Dataset URLs from any S3-compatible store: AWS S3, Supabase's S3 endpoint, GCS, R2, MinIO, moto.

The URL is a SigV4 presigned GET, so whoever holds it downloads the file with a plain HTTP GET.
Presigning is a local computation that succeeds for any key, so the object is looked up first:
a missing dataset must fail the job now, not hours later when the cluster tries to download it.
"""

from __future__ import annotations

from typing import Any, Final, Protocol
from uuid import UUID

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import ArtifactMissing, DatasetFileMissing, StorageError
from shared.storage.artifacts import (
    ARTIFACTS_BUCKET,
    DOWNLOAD_URL_TTL_SECONDS,
    UPLOAD_URL_TTL_SECONDS,
    artifact_location,
    upload_keys,
)
from shared.storage.base import SIGNED_URL_TTL_SECONDS, resolve_bucket, validate_path
from shared.training_events import ADAPTER_DIR, ADAPTER_FILES, ArtifactTargets

# SigV4 presigned URLs cannot outlive a week; S3 refuses longer ones when they are used.
MAX_EXPIRES_IN: Final = 7 * 24 * 60 * 60

# HEAD answers carry no body, so a missing key and a missing bucket both come back as a bare 404.
_NOT_FOUND_CODES: Final = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


class S3Client(Protocol):
    """The part of a boto3 S3 client this adapter uses (boto3 ships no type hints)."""

    def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]: ...

    def generate_presigned_url(
        self, ClientMethod: str, Params: dict[str, Any], ExpiresIn: int, HttpMethod: str
    ) -> str: ...


def create_s3_client(
    *,
    endpoint_url: str | None,
    region: str,
    access_key_id: str,
    secret_access_key: str,
    max_attempts: int = 3,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
) -> S3Client:
    """Build a boto3 S3 client that signs with SigV4 and addresses buckets by path.

    Path-style addressing (`{endpoint}/{bucket}/{key}`) is what Supabase's S3 endpoint, MinIO and
    moto expect, and it needs no wildcard DNS. `endpoint_url=None` means AWS itself.
    """
    client: S3Client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
        ),
    )
    return client


class S3DatasetStorage:
    """Signs dataset download URLs, and a run's artifact URLs, with an S3 client's credentials."""

    def __init__(self, client: S3Client, *, artifacts_bucket: str = ARTIFACTS_BUCKET) -> None:
        self._client = client
        self._artifacts_bucket = artifacts_bucket

    def upload_targets(self, user_id: UUID | str, job_id: UUID | str) -> ArtifactTargets:
        """SigV4 presigned PUT URLs, one per file; signing is local, nothing is sent."""
        urls = {
            name: self._presign("put_object", self._artifacts_bucket, key, UPLOAD_URL_TTL_SECONDS)
            for name, key in upload_keys(user_id, job_id).items()
        }
        return ArtifactTargets(location=artifact_location(user_id, job_id), upload_urls=urls)

    def adapter_download_urls(
        self,
        user_id: UUID | str,
        job_id: UUID | str,
        expires_in: int = DOWNLOAD_URL_TTL_SECONDS,
    ) -> dict[str, str]:
        """Presigned GET URLs for the final adapter's files, once they are known to exist."""
        keys = {
            name: key
            for name, key in upload_keys(user_id, job_id).items()
            if name.startswith(ADAPTER_DIR)
        }
        for key in keys.values():
            self._require(key)
        return {
            name.removeprefix(ADAPTER_DIR): self._presign(
                "get_object", self._artifacts_bucket, key, expires_in
            )
            for name, key in keys.items()
            if name.removeprefix(ADAPTER_DIR) in ADAPTER_FILES
        }

    def _require(self, key: str) -> None:
        try:
            self._client.head_object(Bucket=self._artifacts_bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND_CODES:
                raise ArtifactMissing(f"The trained adapter file {key!r} is not stored.") from exc
            raise StorageError(f"Artifact storage refused to look up {key!r} ({code}).") from exc
        except BotoCoreError as exc:
            raise StorageError("Artifact storage could not be reached.") from exc

    def _presign(self, method: str, bucket: str, key: str, expires_in: int) -> str:
        try:
            return self._client.generate_presigned_url(
                ClientMethod=method,
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=expires_in,
                HttpMethod="PUT" if method == "put_object" else "GET",
            )
        except BotoCoreError as exc:
            raise StorageError(f"Could not sign a URL for {key!r} in bucket {bucket!r}.") from exc

    def signed_url(
        self, bucket: str | None, path: str, expires_in: int = SIGNED_URL_TTL_SECONDS
    ) -> str:
        """Return a SigV4 presigned GET URL for `path` in `bucket`, valid for `expires_in` seconds.

        Raises:
            ValueError: `expires_in` is outside what SigV4 allows (1 second to 7 days).
            UnknownBucket: the bucket is not one this runner uses; nothing is sent.
            DatasetFileMissing: the file (or the bucket itself) is not in the store.
            StorageError: the store could not be reached or refused the lookup.
        """
        if not 1 <= expires_in <= MAX_EXPIRES_IN:
            raise ValueError(
                f"expires_in must be between 1 and {MAX_EXPIRES_IN} seconds, got {expires_in}"
            )
        bucket = resolve_bucket(bucket)
        key = validate_path(bucket, path)
        try:
            self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND_CODES:
                raise DatasetFileMissing(
                    f"The dataset file {key!r} is not in the storage bucket {bucket!r}."
                ) from exc
            # A 403 here usually means the key lacks s3:GetObject (or s3:ListBucket, without
            # which S3 answers 403 instead of 404 for a missing key).
            raise StorageError(
                f"Dataset storage refused to look up {key!r} in bucket {bucket!r} "
                f"({code or 'no error code'})."
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(
                f"Dataset storage could not be reached to look up {key!r} in bucket {bucket!r}."
            ) from exc
        try:
            return self._client.generate_presigned_url(
                ClientMethod="get_object",
                Params={"Bucket": bucket, "Key": key},
                ExpiresIn=expires_in,
                HttpMethod="GET",
            )
        except BotoCoreError as exc:
            raise StorageError(
                f"Could not sign a download URL for {key!r} in bucket {bucket!r}."
            ) from exc
