"""Dataset URLs from Supabase Storage, through its REST API and the service-role key.

Storage answers `POST /object/sign/{bucket}/{path}` with a URL relative to `/storage/v1`;
storage3 joins it onto the base URL, so the URL handed to the cluster is absolute. The token in
it is checked by Storage itself, and signing fails when the object is absent, so no separate
existence check is needed.
"""

from __future__ import annotations

from typing import Final

import httpx
from pydantic import ValidationError
from storage3 import SyncStorageClient
from storage3.exceptions import StorageApiError
from storage3.utils import StorageException

from shared.errors import DatasetFileMissing, StorageError
from shared.storage.base import SIGNED_URL_TTL_SECONDS, resolve_bucket, validate_path

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
    """Signs dataset download URLs with Supabase Storage's `create_signed_url`."""

    def __init__(self, client: SyncStorageClient) -> None:
        self._client = client

    @classmethod
    def connect(
        cls,
        supabase_url: str,
        service_role_key: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> SupabaseDatasetStorage:
        """Talk to `{supabase_url}/storage/v1` as the service role, which every bucket admits."""
        headers = {"Authorization": f"Bearer {service_role_key}", "apikey": service_role_key}
        # A trailing slash keeps the base URL's last segment when storage3 joins paths onto it.
        base_url = f"{supabase_url.rstrip('/')}/storage/v1/"
        # Our own httpx client, because storage3's `timeout` argument is deprecated and its
        # default client needs HTTP/2 support installed.
        http_client = httpx.Client(headers=headers, timeout=timeout)
        return cls(SyncStorageClient(base_url, headers, http_client=http_client))

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
