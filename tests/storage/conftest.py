"""A real S3 API (moto's server over HTTP) for the storage tests, started once per session."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from infra.local.s3 import LocalS3Server, create_buckets
from shared.storage import S3DatasetStorage


@pytest.fixture(scope="session")
def s3_client(s3_server: LocalS3Server) -> Any:
    client = s3_server.client()
    create_buckets(client)
    return client


@pytest.fixture
def s3_storage(s3_client: Any) -> S3DatasetStorage:
    return S3DatasetStorage(s3_client)


@pytest.fixture
def upload(s3_client: Any) -> Callable[..., str]:
    """Put bytes into a bucket under a fresh folder, so tests sharing the server never collide."""

    def put(bucket: str, body: bytes, name: str = "dataset.jsonl") -> str:
        path = f"{uuid.uuid4()}/{name}"
        s3_client.put_object(Bucket=bucket, Key=path, Body=body)
        return path

    return put
