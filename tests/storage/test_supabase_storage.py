"""The Supabase Storage adapter, against respx standing in for Supabase's hosted Storage API.

Storage cannot run here, so these tests pin the request the adapter sends (method, URL, headers,
body) and what it makes of each answer Storage gives.
"""

from __future__ import annotations

import json
import warnings

import httpx
import pytest
import respx

from shared.errors import DatasetFileMissing, StorageError, UnknownBucket
from shared.storage import SupabaseDatasetStorage

SUPABASE_URL = "https://abcdefghijklmnop.supabase.co"
SERVICE_KEY = "service-role-key-for-tests"
SIGN_URL = f"{SUPABASE_URL}/storage/v1/object/sign"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJ1cmwiOiJsb3JhLWRhdGFzZXRzL3UvZC5qc29ubCJ9.c2lnbmF0dXJl"


@pytest.fixture
def storage() -> SupabaseDatasetStorage:
    return SupabaseDatasetStorage.connect(SUPABASE_URL, SERVICE_KEY)


def _signed(bucket: str, path: str) -> httpx.Response:
    """Storage's answer: a URL relative to /storage/v1, carrying the token."""
    return httpx.Response(200, json={"signedURL": f"/object/sign/{bucket}/{path}?token={TOKEN}"})


@pytest.mark.parametrize(
    ("recorded_bucket", "bucket"),
    [
        ("training-files", "training-files"),
        ("lora-datasets", "lora-datasets"),
        (None, "lora-datasets"),
    ],
)
def test_sign_request_has_the_documented_shape(
    storage: SupabaseDatasetStorage,
    respx_mock: respx.MockRouter,
    recorded_bucket: str | None,
    bucket: str,
) -> None:
    """One POST to /storage/v1/object/sign/{bucket}/{path} as the service role, 24 h expiry."""
    route = respx_mock.post(f"{SIGN_URL}/{bucket}/user-1/data.jsonl").mock(
        return_value=_signed(bucket, "user-1/data.jsonl")
    )

    storage.signed_url(recorded_bucket, "user-1/data.jsonl")

    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == f"{SIGN_URL}/{bucket}/user-1/data.jsonl"
    assert request.headers["Authorization"] == f"Bearer {SERVICE_KEY}"
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["Content-Type"] == "application/json"
    # storage3 2.34.1 sends the number as a string; Storage's schema coerces it to an integer.
    assert json.loads(request.content) == {"expiresIn": "86400"}


def test_expiry_is_passed_through(
    storage: SupabaseDatasetStorage, respx_mock: respx.MockRouter
) -> None:
    """`expires_in` is the lifetime Storage is asked for."""
    route = respx_mock.post(f"{SIGN_URL}/lora-datasets/d.jsonl").mock(
        return_value=_signed("lora-datasets", "d.jsonl")
    )

    storage.signed_url("lora-datasets", "d.jsonl", expires_in=600)

    assert json.loads(route.calls.last.request.content) == {"expiresIn": "600"}


@pytest.mark.parametrize("bucket", ["training-files", "lora-datasets"])
def test_returned_url_is_absolute_under_storage_v1(
    storage: SupabaseDatasetStorage, respx_mock: respx.MockRouter, bucket: str
) -> None:
    """Storage's relative URL comes back joined onto {SUPABASE_URL}/storage/v1, token intact."""
    respx_mock.post(f"{SIGN_URL}/{bucket}/user-1/data.jsonl").mock(
        return_value=_signed(bucket, "user-1/data.jsonl")
    )

    url = storage.signed_url(bucket, "user-1/data.jsonl")

    assert url == f"{SIGN_URL}/{bucket}/user-1/data.jsonl?token={TOKEN}"


def test_path_with_spaces_is_encoded_once(
    storage: SupabaseDatasetStorage, respx_mock: respx.MockRouter
) -> None:
    """A file name with spaces is percent-encoded in the request and not re-encoded in the URL."""
    encoded = "user-1/my%20data.jsonl"
    route = respx_mock.post(f"{SIGN_URL}/lora-datasets/{encoded}").mock(
        return_value=_signed("lora-datasets", encoded)
    )

    url = storage.signed_url("lora-datasets", "user-1/my data.jsonl")

    assert route.call_count == 1
    assert url == f"{SIGN_URL}/lora-datasets/{encoded}?token={TOKEN}"


def test_trailing_slash_on_the_project_url_is_harmless(respx_mock: respx.MockRouter) -> None:
    """A trailing slash on the project URL changes nothing and triggers no storage3 warning."""
    route = respx_mock.post(f"{SIGN_URL}/lora-datasets/d.jsonl").mock(
        return_value=_signed("lora-datasets", "d.jsonl")
    )

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        storage = SupabaseDatasetStorage.connect(f"{SUPABASE_URL}/", SERVICE_KEY)
        storage.signed_url("lora-datasets", "d.jsonl")

    assert route.call_count == 1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"statusCode": "404", "error": "not_found", "message": "Object not found"}),
        (404, {"statusCode": "404", "code": "NoSuchKey", "message": "Object not found"}),
    ],
    ids=["legacy-400", "error-code-404"],
)
def test_object_not_found_is_a_missing_dataset_file(
    storage: SupabaseDatasetStorage,
    respx_mock: respx.MockRouter,
    status: int,
    body: dict[str, str],
) -> None:
    """Storage's "Object not found", in either error format, fails as DatasetFileMissing."""
    respx_mock.post(f"{SIGN_URL}/training-files/gone.jsonl").mock(
        return_value=httpx.Response(status, json=body)
    )

    with pytest.raises(DatasetFileMissing) as caught:
        storage.signed_url("training-files", "gone.jsonl")

    assert "'training-files'" in caught.value.message
    assert "'gone.jsonl'" in caught.value.message


def test_missing_bucket_is_a_storage_error_not_a_missing_file(
    storage: SupabaseDatasetStorage, respx_mock: respx.MockRouter
) -> None:
    """A project without the bucket is a setup problem, reported as a plain StorageError."""
    respx_mock.post(f"{SIGN_URL}/training-files/d.jsonl").mock(
        return_value=httpx.Response(
            400,
            json={"statusCode": "404", "error": "Bucket not found", "message": "Bucket not found"},
        )
    )

    with pytest.raises(StorageError) as caught:
        storage.signed_url("training-files", "d.jsonl")

    assert type(caught.value) is StorageError
    assert "Bucket not found" in caught.value.message


def test_server_error_is_a_storage_error(
    storage: SupabaseDatasetStorage, respx_mock: respx.MockRouter
) -> None:
    """A 500 from Storage fails as StorageError naming the file, with the cause kept."""
    respx_mock.post(f"{SIGN_URL}/lora-datasets/d.jsonl").mock(
        return_value=httpx.Response(
            500, json={"statusCode": "500", "error": "internal", "message": "Internal Server Error"}
        )
    )

    with pytest.raises(StorageError) as caught:
        storage.signed_url("lora-datasets", "d.jsonl")

    assert type(caught.value) is StorageError
    assert "'d.jsonl'" in caught.value.message
    assert caught.value.__cause__ is not None


def test_unparseable_gateway_404_is_not_mistaken_for_a_missing_file(
    storage: SupabaseDatasetStorage, respx_mock: respx.MockRouter
) -> None:
    """A 404 page that is not Storage's (wrong SUPABASE_URL, a proxy) is a plain StorageError."""
    respx_mock.post(f"{SIGN_URL}/lora-datasets/d.jsonl").mock(
        return_value=httpx.Response(404, text="<html>404 page not found</html>")
    )

    with pytest.raises(StorageError) as caught:
        storage.signed_url("lora-datasets", "d.jsonl")

    assert type(caught.value) is StorageError


@pytest.mark.parametrize(
    "error", [httpx.ConnectError("connection refused"), httpx.ReadTimeout("timed out")]
)
def test_connection_failure_is_a_storage_error(
    storage: SupabaseDatasetStorage, respx_mock: respx.MockRouter, error: httpx.HTTPError
) -> None:
    """Storage unreachable or too slow fails as StorageError, with the transport error kept."""
    respx_mock.post(f"{SIGN_URL}/lora-datasets/d.jsonl").mock(side_effect=error)

    with pytest.raises(StorageError) as caught:
        storage.signed_url("lora-datasets", "d.jsonl")

    assert type(caught.value) is StorageError
    assert isinstance(caught.value.__cause__, httpx.HTTPError)


def test_success_without_a_signed_url_is_a_storage_error(
    storage: SupabaseDatasetStorage, respx_mock: respx.MockRouter
) -> None:
    """A 200 whose body lacks `signedURL` fails as StorageError rather than a broken URL."""
    respx_mock.post(f"{SIGN_URL}/lora-datasets/d.jsonl").mock(
        return_value=httpx.Response(200, json={"unexpected": True})
    )

    with pytest.raises(StorageError):
        storage.signed_url("lora-datasets", "d.jsonl")


def test_unknown_bucket_sends_nothing(
    storage: SupabaseDatasetStorage, respx_mock: respx.MockRouter
) -> None:
    """An unknown bucket fails as UnknownBucket before any request reaches Storage."""
    with pytest.raises(UnknownBucket, match="'avatars'"):
        storage.signed_url("avatars", "user-1/data.jsonl")

    assert respx_mock.calls.call_count == 0
