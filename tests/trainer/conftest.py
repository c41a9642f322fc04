"""The trainer's tests run the real trainer on a tiny model built here (no download), with the
dataset served over local HTTP and the uploads going to a local S3 (moto) through presigned URLs,
as in production.

They need the ``trainer`` extra (torch, transformers, peft), which `make test` installs; without
it they fail at once with a message saying so, rather than being skipped unseen.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.s3 import LocalS3Server, create_buckets
from shared.storage import ARTIFACTS_BUCKET, S3DatasetStorage
from shared.storage.artifacts import artifact_prefix
from tests.cluster.support import DatasetServer
from tests.trainer.support import Artifacts

try:
    import peft  # noqa: F401
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "the trainer extra is not installed: `make test` installs it (pip install -e '.[trainer]')"
    ) from exc


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One torch thread in this process: on two shared cores, more OpenMP threads than free
    cores wait on each other for seconds a step."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny random Llama and tokenizer for the whole session."""
    from trainer.tiny_model import build

    return build(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def datasets() -> Iterator[DatasetServer]:
    server = DatasetServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def s3() -> Iterator[Any]:
    """A boto3 client of a local S3 with the dataset and artifact buckets."""
    with LocalS3Server() as server:
        client = server.client()
        create_buckets(client)
        client.create_bucket(Bucket=ARTIFACTS_BUCKET)
        yield client


def new_artifacts(s3: Any) -> Artifacts:
    """Presigned upload URLs for a new job, signed as the processor signs them."""
    user_id, job_id = uuid.uuid4(), uuid.uuid4()
    targets = S3DatasetStorage(s3).upload_targets(user_id, job_id)
    return Artifacts(
        targets=targets,
        bucket=ARTIFACTS_BUCKET,
        prefix=artifact_prefix(user_id, job_id),
        client=s3,
    )


@pytest.fixture
def artifacts(s3: Any) -> Artifacts:
    """A new job's upload targets in the local S3."""
    return new_artifacts(s3)
