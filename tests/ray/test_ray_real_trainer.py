"""The real trainer (``python -m trainer``) through Ray and the adapter, on the tiny model.

Skipped without the ``trainer`` extra (torch, transformers, peft).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.s3 import demo_dataset_jsonl
from shared.cluster import ClusterJobState, RayJobsCluster
from tests.cluster.support import DatasetServer
from tests.ray.conftest import TOKEN, run_request
from tests.trainer.support import FAST_HYPERPARAMETERS

pytest.importorskip("torch", reason="the trainer extra is not installed")
pytest.importorskip("peft", reason="the trainer extra is not installed")

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.tiny_model import build

    return build(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="module")
def datasets() -> Iterator[DatasetServer]:
    server = DatasetServer()
    yield server
    server.close()


@pytest.fixture
async def trainer_cluster(ray_head: Any) -> AsyncIterator[RayJobsCluster]:
    async with RayJobsCluster(
        ray_head.dashboard_url,
        TOKEN,
        entrypoint="python -m trainer --device cpu --retry-backoff 0.05",
        tail_lines=20,
        read_timeout=10.0,
    ) as adapter:
        yield adapter


async def test_real_trainer_run_is_reported_from_its_events(
    trainer_cluster: RayJobsCluster, tiny_model: Path, datasets: DatasetServer
) -> None:
    """A real training run on Ray is reported running, then completed, with each step once,
    its totals and its times, polled as the processor polls."""
    request = run_request().model_copy(
        update={
            "dataset_url": datasets.publish(demo_dataset_jsonl(64)),
            "hyperparameters": {**FAST_HYPERPARAMETERS, "base_model": str(tiny_model)},
        }
    )
    submitted = await trainer_cluster.submit(request)
    delivered: list[int] = []
    since = 0
    deadline = time.monotonic() + 180
    while True:
        status = await trainer_cluster.status(submitted.external_job_id, since)
        delivered += [point.step for point in status.history]
        since = delivered[-1] if delivered else 0
        if status.status.is_terminal:
            break
        assert time.monotonic() < deadline, f"still {status.status}"
        await asyncio.sleep(0.5)
    assert status.status is ClusterJobState.COMPLETED, status.error
    assert status.total_steps is not None
    assert delivered == list(range(1, status.total_steps + 1))
    assert status.current_step == status.total_steps
    assert status.current_epoch == status.total_epochs
    assert status.started_at is not None
    assert status.ended_at is not None
    assert status.started_at <= status.ended_at
    assert status.artifact_uri is None  # no upload targets were given
    assert status.metrics is not None
    assert status.metrics.gpu_utilization is None


async def test_real_trainer_run_cancelled_through_ray(
    trainer_cluster: RayJobsCluster, tiny_model: Path, datasets: DatasetServer
) -> None:
    """Cancelling a real run stops the trainer at a step boundary: cancelled, not failed, even
    though the trainer exits 3 on SIGTERM."""
    request = run_request().model_copy(
        update={
            "dataset_url": datasets.publish(demo_dataset_jsonl(64)),
            "hyperparameters": {
                **FAST_HYPERPARAMETERS,
                "base_model": str(tiny_model),
                "epochs": 50,
            },
        }
    )
    submitted = await trainer_cluster.submit(request)
    job = submitted.external_job_id
    deadline = time.monotonic() + 180
    while (await trainer_cluster.status(job)).current_step < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.5)
    assert (await trainer_cluster.cancel(job)).status is ClusterJobState.CANCELLED
    while not (status := await trainer_cluster.status(job)).status.is_terminal:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.5)
    assert status.status is ClusterJobState.CANCELLED
    assert status.total_steps is not None
    assert 1 <= status.current_step < status.total_steps
