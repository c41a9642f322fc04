"""The S3 adapter against moto's S3 server, over real HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from infra.local.s3 import LOCAL_REGION, LOCAL_SECRET_ACCESS_KEY
from shared.errors import DatasetFileMissing, StorageError, UnknownBucket
from shared.storage import S3DatasetStorage, create_s3_client

# The `upload` fixture (conftest.py): put bytes into a bucket, get back their fresh path.
Upload = Callable[..., str]


def _query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def _sigv4_query_signature(url: str, secret_access_key: str) -> str:
    """Recompute a presigned URL's signature from the SigV4 spec, independently of botocore."""
    parts = urlsplit(url)
    params = sorted(p for p in parts.query.split("&") if not p.startswith("X-Amz-Signature="))
    canonical_request = "\n".join(
        [
            "GET",
            parts.path,
            "&".join(params),
            f"host:{parts.netloc}",
            "",
            "host",
            "UNSIGNED-PAYLOAD",
        ]
    )
    query = _query(url)
    _, date, region, service, terminator = query["X-Amz-Credential"].split("/")
    scope = f"{date}/{region}/{service}/{terminator}"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            query["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret_access_key}".encode()
    for part in (date, region, service, terminator):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("recorded_bucket", "bucket"),
    [
        ("training-files", "training-files"),
        ("lora-datasets", "lora-datasets"),
        (None, "lora-datasets"),
    ],
)
def test_signed_url_downloads_the_exact_file_from_the_right_bucket(
    s3_storage: S3DatasetStorage, upload: Upload, recorded_bucket: str | None, bucket: str
) -> None:
    """The URL names the dataset's bucket (the default one when NULL) and serves its exact bytes."""
    body = f'{{"instruction": "which bucket?", "response": "{bucket}"}}\n'.encode()
    path = upload(bucket, body)

    url = s3_storage.signed_url(recorded_bucket, path)

    assert urlsplit(url).path == f"/{bucket}/{path}"
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == body


def test_a_path_with_spaces_and_unicode_survives_signing(
    s3_storage: S3DatasetStorage, upload: Upload
) -> None:
    """A file name users typed (spaces, accents) is encoded once and still downloads."""
    body = b'{"instruction": "caf\xc3\xa9", "response": "ok"}\n'
    path = upload("lora-datasets", body, name="my café data.jsonl")

    url = s3_storage.signed_url("lora-datasets", path)

    assert unquote(urlsplit(url).path) == f"/lora-datasets/{path}"
    assert httpx.get(url).content == body


def test_url_carries_sigv4_parameters_for_24_hours_by_default(
    s3_storage: S3DatasetStorage, upload: Upload
) -> None:
    """The URL is a SigV4 presigned GET that expires after 86400 seconds unless told otherwise."""
    url = s3_storage.signed_url("lora-datasets", upload("lora-datasets", b"{}\n"))

    query = _query(url)
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == "86400"
    assert query["X-Amz-SignedHeaders"] == "host"
    assert query["X-Amz-Credential"].endswith(f"/{LOCAL_REGION}/s3/aws4_request")
    assert set(query) >= {"X-Amz-Date", "X-Amz-Signature"}


def test_expiry_can_be_shortened(s3_storage: S3DatasetStorage, upload: Upload) -> None:
    """`expires_in` is what the URL says it lasts."""
    url = s3_storage.signed_url("lora-datasets", upload("lora-datasets", b"{}\n"), expires_in=600)

    assert _query(url)["X-Amz-Expires"] == "600"


@pytest.mark.parametrize("expires_in", [0, -1, 7 * 24 * 60 * 60 + 1])
def test_expiry_outside_what_sigv4_allows_is_refused(
    s3_storage: S3DatasetStorage, expires_in: int
) -> None:
    """A lifetime S3 would reject when the URL is used is refused when it is signed."""
    with pytest.raises(ValueError, match="expires_in"):
        s3_storage.signed_url("lora-datasets", "any.jsonl", expires_in=expires_in)


def test_signature_is_valid_sigv4_for_the_secret_key(
    s3_storage: S3DatasetStorage, upload: Upload
) -> None:
    """The signature matches an independent SigV4 computation, and a tampered one would not.

    moto serves presigned URLs without checking their signature or expiry, so this is the
    check that a real S3 would accept the URL.
    """
    url = s3_storage.signed_url("training-files", upload("training-files", b"{}\n"))

    signature = _query(url)["X-Amz-Signature"]
    assert signature == _sigv4_query_signature(url, LOCAL_SECRET_ACCESS_KEY)
    assert signature != _sigv4_query_signature(url, "another-secret")


def test_the_file_is_private_without_the_signature(
    s3_storage: S3DatasetStorage, upload: Upload
) -> None:
    """The same URL stripped of its signing parameters is refused (403): the bucket is private."""
    url = s3_storage.signed_url("lora-datasets", upload("lora-datasets", b"secret\n"))

    assert httpx.get(url.split("?", 1)[0]).status_code == 403


def test_missing_file_is_reported_with_bucket_and_path(s3_storage: S3DatasetStorage) -> None:
    """A path with no object behind it fails as DatasetFileMissing naming bucket and path."""
    with pytest.raises(DatasetFileMissing) as caught:
        s3_storage.signed_url("training-files", "nobody/uploaded-this.jsonl")

    assert "'training-files'" in caught.value.message
    assert "'nobody/uploaded-this.jsonl'" in caught.value.message


class _NoRequests:
    """An S3 client that fails the test if the adapter sends anything."""

    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"the adapter called {name} for a bucket it should have refused")


def test_unknown_bucket_is_refused_before_any_request() -> None:
    """An unknown bucket fails as UnknownBucket without touching the store."""
    storage = S3DatasetStorage(_NoRequests())

    with pytest.raises(UnknownBucket, match="'avatars'"):
        storage.signed_url("avatars", "user/data.jsonl")


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_storage_down_is_a_storage_error(closed_port: int) -> None:
    """When nothing listens at the endpoint, signing fails as StorageError naming the file."""
    client = create_s3_client(
        endpoint_url=f"http://127.0.0.1:{closed_port}",
        region=LOCAL_REGION,
        access_key_id="key",
        secret_access_key="secret",
        max_attempts=1,
        connect_timeout=1.0,
    )

    with pytest.raises(StorageError) as caught:
        S3DatasetStorage(client).signed_url("lora-datasets", "user/data.jsonl")

    assert type(caught.value) is StorageError
    assert "'user/data.jsonl'" in caught.value.message
    assert caught.value.__cause__ is not None


@pytest.fixture
def denied_prefix(s3_client: Any) -> Iterator[str]:
    """A folder of `lora-datasets` that a bucket policy closes to everyone, for this test only."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": "arn:aws:s3:::lora-datasets/denied/*",
            }
        ],
    }
    s3_client.put_bucket_policy(Bucket="lora-datasets", Policy=json.dumps(policy))
    yield "denied/"
    s3_client.delete_bucket_policy(Bucket="lora-datasets")


def test_access_denied_is_a_storage_error_not_a_missing_file(
    s3_storage: S3DatasetStorage, denied_prefix: str
) -> None:
    """A 403 from the store stays a plain StorageError with its code, not a missing file."""
    with pytest.raises(StorageError) as caught:
        s3_storage.signed_url("lora-datasets", f"{denied_prefix}data.jsonl")

    assert type(caught.value) is StorageError
    assert "(403)" in caught.value.message
