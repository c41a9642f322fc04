"""process-training-jobs served by functions-framework over HTTP, as Cloud Functions runs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.local import s3 as local_s3
from infra.local.processes import ServerProcess, start_function
from infra.local.s3 import LocalS3Server
from shared.models import JobStatus
from tests.cluster.support import API_KEY
from tests.conftest import ClonedDatabase
from tests.processor.conftest import Stack

SOURCE = Path(__file__).resolve().parents[2] / "functions" / "process_training_jobs" / "main.py"
SECRET = "cron-secret-for-tests"


@pytest.fixture
def function_log(tmp_path: Path) -> Path:
    return tmp_path / "function.log"


@pytest.fixture
def function(
    test_db: ClonedDatabase, stack: Stack, s3_server: LocalS3Server, function_log: Path
) -> Iterator[ServerProcess]:
    env = {
        "DATABASE_URL": test_db.app,
        "GPU_CLUSTER_API_URL": stack.sim.base_url,
        "GPU_CLUSTER_API_KEY": API_KEY,
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": s3_server.endpoint_url,
        "S3_ACCESS_KEY_ID": local_s3.LOCAL_ACCESS_KEY_ID,
        "S3_SECRET_ACCESS_KEY": local_s3.LOCAL_SECRET_ACCESS_KEY,
        "CRON_SECRET": SECRET,
        "PROCESSOR_POLL_INTERVAL_SECONDS": "0",
    }
    with (
        function_log.open("wb") as log,
        start_function(SOURCE, "process_training_jobs", env=env, stdout=log) as server,
    ):
        yield server


def test_cron_call_runs_a_cycle_and_returns_its_summary(
    function: ServerProcess, stack: Stack
) -> None:
    """POST with the cron secret runs a cycle: the JSON summary counts the claimed job."""
    job_id = stack.queued_job()
    response = httpx.post(
        function.base_url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=60
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["data"]["claimed"] == 1
    assert body["data"]["submitted"] == 1
    assert response.headers["content-type"] == "application/json"
    assert stack.status(job_id) in {JobStatus.INITIALIZING, JobStatus.RUNNING, JobStatus.COMPLETED}


def test_cycle_summary_is_logged_as_one_json_line(
    function: ServerProcess, function_log: Path
) -> None:
    """Each cycle writes its summary to stdout as one JSON line that Cloud Logging reads as a
    structured entry, with the same counts the response carries."""
    response = httpx.post(
        function.base_url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=60
    )
    data = response.json()["data"]
    for key in ("claimed", "submitted", "polled", "completed", "failed", "cancelled", "ms"):
        assert isinstance(data[key], int), key
    entries = []
    for line in function_log.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    [entry] = [e for e in entries if e.get("message") == "processor cycle"]
    assert entry["severity"] == "INFO"
    assert {k: entry[k] for k in data} == data


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-secret"},
        {"Authorization": f"Basic {SECRET}"},
        {"Authorization": "Bearer"},
    ],
    ids=["no-header", "wrong-secret", "wrong-scheme", "empty-token"],
)
def test_anything_but_the_secret_is_401(
    function: ServerProcess, stack: Stack, headers: dict[str, str]
) -> None:
    """Without the cron secret the endpoint answers 401 and runs nothing."""
    job_id = stack.queued_job()
    response = httpx.post(function.base_url, headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.json() == {
        "success": False,
        "error": {"code": "unauthorized", "message": "A valid cron secret is required."},
    }
    assert stack.status(job_id) is JobStatus.QUEUED


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_only_post_is_allowed(function: ServerProcess, method: str) -> None:
    """Any method but POST is 405 with an Allow header."""
    response = httpx.request(
        method, function.base_url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=30
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
