"""A run's artifacts: signed upload URLs for the trainer and signed download URLs for the owner,
against moto's S3 server over real HTTP, and the Supabase adapter's requests by shape."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
import respx

from shared.errors import ArtifactMissing
from shared.storage import (
    ARTIFACTS_BUCKET,
    S3DatasetStorage,
    SupabaseDatasetStorage,
    adapter_location,
    artifact_location,
)
from shared.training_events import ADAPTER_FILES

SUPABASE_URL = "https://abcdefghijklmnop.supabase.co"
SERVICE_KEY = "service-role-key-for-tests"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"


def test_upload_urls_cover_the_adapter_and_the_checkpoint_under_the_jobs_folder(
    s3_storage: S3DatasetStorage,
) -> None:
    """Every file of the adapter and of the checkpoint gets a PUT URL under <user>/<job>/."""
    user_id, job_id = uuid.uuid4(), uuid.uuid4()
    targets = s3_storage.upload_targets(user_id, job_id)
    assert targets.location == f"storage://{ARTIFACTS_BUCKET}/{user_id}/{job_id}/"
    assert targets.location == artifact_location(user_id, job_id)
    assert set(targets.upload_urls) == {
        f"{folder}/{name}" for folder in ("adapter", "checkpoint") for name in ADAPTER_FILES
    }
    for name, url in targets.upload_urls.items():
        assert f"/{ARTIFACTS_BUCKET}/{user_id}/{job_id}/{name}?" in url


def test_an_uploaded_adapter_downloads_through_the_owners_urls(
    s3_storage: S3DatasetStorage,
) -> None:
    """What the trainer PUTs through its URLs is what the owner's download URLs return; the
    upload needed no storage key."""
    user_id, job_id = uuid.uuid4(), uuid.uuid4()
    targets = s3_storage.upload_targets(user_id, job_id)
    contents = {name: f"{name} of {job_id}".encode() for name in ADAPTER_FILES}
    for name, body in contents.items():
        response = httpx.put(targets.upload_urls[f"adapter/{name}"], content=body)
        assert response.status_code == 200, response.text
    urls = s3_storage.adapter_download_urls(user_id, job_id, expires_in=60)
    assert set(urls) == set(ADAPTER_FILES)
    for name, url in urls.items():
        assert httpx.get(url).content == contents[name]
    assert adapter_location(user_id, job_id) == targets.location + "adapter/"


def test_no_download_urls_for_an_adapter_that_is_not_stored(s3_storage: S3DatasetStorage) -> None:
    """A job whose run uploaded nothing gets a clear error, not a link to a missing file."""
    with pytest.raises(ArtifactMissing):
        s3_storage.adapter_download_urls(uuid.uuid4(), uuid.uuid4())


def test_supabase_upload_urls_are_signed_with_upsert_per_file(
    respx_mock: respx.MockRouter,
) -> None:
    """Supabase signs one upload URL per file (upsert, so a checkpoint can be replaced); the URLs
    handed to the trainer are absolute and carry Storage's token."""
    storage = SupabaseDatasetStorage.connect(SUPABASE_URL, SERVICE_KEY)
    user_id, job_id = uuid.uuid4(), uuid.uuid4()
    sign = respx_mock.post(
        url__regex=rf"{SUPABASE_URL}/storage/v1/object/upload/sign/{ARTIFACTS_BUCKET}/.*"
    ).mock(
        side_effect=lambda request: httpx.Response(
            200,
            json={
                "url": request.url.path.removeprefix("/storage/v1") + f"?token={TOKEN}",
            },
        )
    )
    targets = storage.upload_targets(user_id, job_id)
    assert sign.call_count == 4
    for call in sign.calls:
        assert call.request.headers["x-upsert"] == "true"
        assert call.request.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    for name, url in targets.upload_urls.items():
        assert url == (
            f"{SUPABASE_URL}/storage/v1/object/upload/sign/{ARTIFACTS_BUCKET}/"
            f"{user_id}/{job_id}/{name}?token={TOKEN}"
        )


def test_supabase_download_urls_are_short_lived_signed_urls(
    respx_mock: respx.MockRouter,
) -> None:
    """The owner's download URLs come from Storage's sign endpoint with the asked expiry; a
    missing object is ArtifactMissing."""
    storage = SupabaseDatasetStorage.connect(SUPABASE_URL, SERVICE_KEY)
    user_id, job_id = uuid.uuid4(), uuid.uuid4()

    def signed(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/storage/v1")
        return httpx.Response(200, json={"signedURL": f"{path}?token={TOKEN}"})

    sign = respx_mock.post(
        url__regex=rf"{SUPABASE_URL}/storage/v1/object/sign/{ARTIFACTS_BUCKET}/.*"
    ).mock(side_effect=signed)
    urls = storage.adapter_download_urls(user_id, job_id, expires_in=120)
    assert set(urls) == set(ADAPTER_FILES)
    bodies: list[Any] = [json.loads(call.request.content) for call in sign.calls]
    assert bodies == [{"expiresIn": "120"}] * 2
    assert urls["adapter_config.json"].startswith(f"{SUPABASE_URL}/storage/v1/object/sign/")

    respx_mock.reset()
    respx_mock.post(
        url__regex=rf"{SUPABASE_URL}/storage/v1/object/sign/{ARTIFACTS_BUCKET}/.*"
    ).mock(
        return_value=httpx.Response(
            400, json={"statusCode": "404", "error": "not_found", "message": "Object not found"}
        )
    )
    with pytest.raises(ArtifactMissing):
        storage.adapter_download_urls(user_id, job_id)
