"""The Ray tests run the Ray adapter against a real local Ray head, one for the whole session.

The head (``infra.local.ray_head``) listens on 127.0.0.1 only, requires a token (Ray's own token
authentication, so the adapter's ``Authorization: Bearer`` header is checked for real), claims
two A100s it does not have, and fails a job that cannot start within ``START_TIMEOUT_SECONDS``
(Ray's default is 900 s) so that a test can watch Ray give up on a job that waits for a GPU type
it lacks. Jobs run ``tests/ray/fake_trainer.py``, which prints the trainer's event lines.

The suite needs the ``ray`` extra, which `make test` installs; without it, it fails saying so.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.cluster import (
    ClusterJobStatus,
    GpuConfig,
    RayJobsCluster,
    SubmitRequest,
)

TOKEN = "test-ray-token"
ENTRYPOINT = "python -m tests.ray.fake_trainer"
START_TIMEOUT_SECONDS = 20
TAIL_LINES = 50
# Long enough for any run the tests start; a run still going after it is a failure.
RUN_TIMEOUT_SECONDS = 60.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def ray_head() -> Iterator[Any]:
    if not Path(sys.executable).with_name("ray").exists() and shutil.which("ray") is None:
        pytest.fail(
            "the `ray` extra is not installed: `make test` installs it (pip install -e '.[ray]')"
        )
    from infra.local.ray_head import start_ray_head

    head = start_ray_head(
        token=TOKEN,
        num_gpus=2,
        accelerator_types=("A100",),
        env={
            "RAY_JOB_START_TIMEOUT_SECONDS": str(START_TIMEOUT_SECONDS),
            # The real trainer's torch: on two shared cores, more threads than cores wait on
            # each other for seconds a step.
            "OMP_NUM_THREADS": "1",
        },
    )
    try:
        yield head
    finally:
        head.stop()


class RequestLog:
    """The paths of the requests a client sent, in order."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)


@pytest.fixture
def requests_sent() -> RequestLog:
    return RequestLog()


@pytest.fixture
async def cluster(ray_head: Any, requests_sent: RequestLog) -> AsyncIterator[RayJobsCluster]:
    client = httpx.AsyncClient(event_hooks={"request": [requests_sent]})
    try:
        async with RayJobsCluster(
            ray_head.dashboard_url,
            TOKEN,
            entrypoint=ENTRYPOINT,
            tail_lines=TAIL_LINES,
            read_timeout=5.0,
            client=client,
        ) as adapter:
            yield adapter
    finally:
        await client.aclose()


@pytest.fixture
def ray_api(ray_head: Any) -> Iterator[httpx.Client]:
    """A plain client of the head's REST API, to look at what the adapter did."""
    with httpx.Client(
        base_url=ray_head.dashboard_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10.0,
    ) as client:
        yield client


@pytest.fixture
async def ray_rest(ray_head: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The same, for async tests."""
    async with httpx.AsyncClient(
        base_url=ray_head.dashboard_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10.0,
    ) as client:
        yield client


def run_request(gpu_type: str = "A100", **fake: Any) -> SubmitRequest:
    """A submission for the fake trainer, with a fresh idempotency key and job id."""
    return SubmitRequest(
        idempotency_key=str(uuid.uuid4()),
        job_id=uuid.uuid4(),
        dataset_url="https://datasets.invalid/pairs.jsonl",
        hyperparameters={"learning_rate": 1e-4, "fake": fake},
        gpu_config=GpuConfig(gpu_type=gpu_type, gpu_count=1),
    )


async def wait_for(
    cluster: RayJobsCluster,
    external_job_id: str,
    until: Any,
    *,
    since_step: int = 0,
    within: float = RUN_TIMEOUT_SECONDS,
) -> ClusterJobStatus:
    """Poll until ``until(status)`` holds (e.g. the run has ended); the last status."""
    deadline = time.monotonic() + within
    while True:
        status = await cluster.status(external_job_id, since_step)
        if until(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"run {external_job_id} still {status.status} after {within} s")
        await asyncio.sleep(0.25)


def ended(status: ClusterJobStatus) -> bool:
    return status.status.is_terminal
