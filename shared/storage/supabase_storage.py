"""Dataset URLs from Supabase Storage, through its REST API and the service-role key.

Storage answers `POST /object/sign/{bucket}/{path}` with a URL relative to `/storage/v1`;
storage3 joins it onto the base URL, so the URL handed to the cluster is absolute. The token in
it is checked by Storage itself, and signing fails when the object is absent, so no separate
existence check is needed.
"""

from __future__ import annotations

from typing import Final
from uuid import UUID

import httpx
from pydantic import ValidationError
from storage3 import SyncStorageClient
from storage3.exceptions import StorageApiError
from storage3.types import CreateSignedUploadUrlOptions
from storage3.utils import StorageException

from shared.errors import ArtifactMissing, DatasetFileMissing, StorageError
from shared.storage.artifacts import (
    ARTIFACTS_BUCKET,
    DOWNLOAD_URL_TTL_SECONDS,
    artifact_location,
    upload_keys,
)
from shared.storage.base import SIGNED_URL_TTL_SECONDS, resolve_bucket, validate_path
from shared.training_events import ADAPTER_DIR, ArtifactTargets

DEFAULT_TIMEOUT: Final = httpx.Timeout(20.0, connect=5.0)


def _is_missing_object(error: StorageApiError) -> bool:
    # Storage reports a missing object as HTTP 400 with {"statusCode": "404", "error": "not_found",
    # "message": "Object not found"} (legacy format) or with {"code": "NoSuchKey", ...} (newer);
    # storage3 cannot parse the newer one, so it reports code "InternalError" with the raw body
    # in the message and the HTTP status, which a proxy's own 404 page would share.
    text = f"{error.code} {error.message}".lower()
    if "bucket not found" in text or "nosuchbucket" in text:
        return False
    if "nosuchkey" in text or "object not found" in text:
        return True
    return str(error.status) == "404" and error.code != "InternalError"


class SupabaseDatasetStorage:
    """Signs dataset download URLs with Supabase Storage's `create_signed_url`, and a run's
    artifact URLs with `create_signed_upload_url`.

    Supabase's signed upload URLs expire after two hours, whatever is asked: a run that starts
    later than that cannot upload through them. Use the S3 backend (Supabase's S3 endpoint) for
    jobs that may wait or train longer.
    """

    def __init__(
        self, client: SyncStorageClient, *, artifacts_bucket: str = ARTIFACTS_BUCKET
    ) -> None:
        self._client = client
        self._artifacts_bucket = artifacts_bucket

    def upload_targets(self, user_id: UUID | str, job_id: UUID | str) -> ArtifactTargets:
        """One signed upload URL per file; the checkpoint's may be written again (upsert)."""
        bucket = self._client.from_(self._artifacts_bucket)
        urls: dict[str, str] = {}
        for name, key in upload_keys(user_id, job_id).items():
            try:
                signed = bucket.create_signed_upload_url(
                    key, CreateSignedUploadUrlOptions(upsert="true")
                )
            except (StorageApiError, StorageException, ValidationError, httpx.HTTPError) as exc:
                raise StorageError(
                    f"Supabase Storage could not sign an upload URL for {key!r}."
                ) from exc
            urls[name] = signed["signed_url"]
        return ArtifactTargets(location=artifact_location(user_id, job_id), upload_urls=urls)

    def adapter_download_urls(
        self,
        user_id: UUID | str,
        job_id: UUID | str,
        expires_in: int = DOWNLOAD_URL_TTL_SECONDS,
    ) -> dict[str, str]:
        """Signed download URLs for the final adapter's files; Storage refuses to sign a missing
        object."""
        bucket = self._client.from_(self._artifacts_bucket)
        urls: dict[str, str] = {}
        for name, key in upload_keys(user_id, job_id).items():
            if not name.startswith(ADAPTER_DIR):
                continue
            try:
                signed = bucket.create_signed_url(key, expires_in)
            except StorageApiError as exc:
                if _is_missing_object(exc):
                    raise ArtifactMissing(
                        f"The trained adapter file {key!r} is not stored."
                    ) from exc
                raise StorageError(f"Supabase Storage refused to sign {key!r}.") from exc
            except (StorageException, ValidationError, httpx.HTTPError) as exc:
                raise StorageError(f"Supabase Storage could not sign {key!r}.") from exc
            url = signed["signedURL"]
            if not url:
                raise StorageError(f"Supabase Storage returned no signed URL for {key!r}.")
            urls[name.removeprefix(ADAPTER_DIR)] = url
        return urls

    @classmethod
    def connect(
        cls,
        supabase_url: str,
        service_role_key: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        artifacts_bucket: str = ARTIFACTS_BUCKET,
    ) -> SupabaseDatasetStorage:
        """Talk to `{supabase_url}/storage/v1` as the service role, which every bucket admits."""
        headers = {"Authorization": f"Bearer {service_role_key}", "apikey": service_role_key}
        # A trailing slash keeps the base URL's last segment when storage3 joins paths onto it.
        base_url = f"{supabase_url.rstrip('/')}/storage/v1/"
        # Our own httpx client, because storage3's `timeout` argument is deprecated and its
        # default client needs HTTP/2 support installed.
        http_client = httpx.Client(headers=headers, timeout=timeout)
        return cls(
            SyncStorageClient(base_url, headers, http_client=http_client),
            artifacts_bucket=artifacts_bucket,
        )

    def signed_url(
        self, bucket: str | None, path: str, expires_in: int = SIGNED_URL_TTL_SECONDS
    ) -> str:
        """Return an absolute signed download URL for `path` in `bucket`.

        Raises:
            UnknownBucket: the bucket is not one this runner uses; nothing is sent.
            DatasetFileMissing: Storage has no such object.
            StorageError: Storage could not be reached, refused, or answered nonsense.
        """
        bucket = resolve_bucket(bucket)
        key = validate_path(bucket, path)
        where = f"{key!r} in bucket {bucket!r}"
        try:
            signed = self._client.from_(bucket).create_signed_url(key, expires_in)
        except StorageApiError as exc:
            if _is_missing_object(exc):
                raise DatasetFileMissing(
                    f"The dataset file {key!r} is not in the storage bucket {bucket!r}."
                ) from exc
            raise StorageError(
                f"Supabase Storage refused to sign a download URL for {where} "
                f"(status {exc.status}: {exc.message})."
            ) from exc
        except httpx.HTTPError as exc:
            raise StorageError(
                f"Supabase Storage could not be reached to sign a download URL for {where}."
            ) from exc
        except (StorageException, ValidationError) as exc:
            raise StorageError(
                f"Supabase Storage answered with an unreadable body when signing {where}."
            ) from exc
        url = signed["signedURL"]
        if not url:
            raise StorageError(f"Supabase Storage returned no signed URL for {where}.")
        return url
