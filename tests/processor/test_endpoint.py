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
from tests.api.support import MALFORMED_REQUESTS, assert_json_error_answer, raw_request
from tests.cluster.support import API_KEY
from tests.conftest import ClonedDatabase
from tests.processor.conftest import Stack

SOURCE = Path(__file__).resolve().parents[2] / "functions" / "process_training_jobs" / "main.py"
SECRET = "cron-secret-for-the-processor-endpoint-tests"


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


def _log_entries(function_log: Path) -> list[dict[str, object]]:
    """Every line the function wrote, each of which must be a JSON object with a severity."""
    entries = []
    for line in function_log.read_text().splitlines():
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert entry["severity"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, line
        entries.append(entry)
    return entries


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


def test_refusal_names_the_bearer_scheme(function: ServerProcess) -> None:
    """The 401 comes from the same error mapping as get-job's and cancel-job's: it carries the
    Bearer challenge, with `invalid_token` only when a token was sent."""
    missing = httpx.post(function.base_url, timeout=30)
    wrong = httpx.post(function.base_url, headers={"Authorization": "Bearer nope"}, timeout=30)

    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS"])
def test_only_post_is_allowed(function: ServerProcess, method: str) -> None:
    """Any method but POST is 405 with an Allow header."""
    response = httpx.request(
        method, function.base_url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=30
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("request_bytes", "status"), MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS.keys()
)
def test_malformed_requests_get_the_json_error_shape(
    function: ServerProcess, request_bytes: bytes, status: int
) -> None:
    """What gunicorn or the framework answers before the function runs (a path with CR LF, the
    framework's own 404s, oversized headers, a malformed request line, a broken chunked body)
    is answered in the JSON error shape too."""
    assert_json_error_answer(raw_request(function.base_url, request_bytes), status)


def test_a_failure_around_the_handler_is_logged_as_json(
    function: ServerProcess, function_log: Path
) -> None:
    """Flask's own report of an exception outside the handler (a broken chunked body) is one
    structured ERROR entry with its traceback, like every other line the function writes."""
    request_bytes, status = MALFORMED_REQUESTS["broken-chunked-body"]
    assert_json_error_answer(raw_request(function.base_url, request_bytes), status)

    [entry] = [e for e in _log_entries(function_log) if e["message"] == "Exception on / [POST]"]
    assert entry["severity"] == "ERROR"
    assert "InvalidChunkSize" in str(entry["stack_trace"])


@pytest.fixture
def broken_function(test_db: ClonedDatabase, function_log: Path) -> Iterator[ServerProcess]:
    """The processor with an S3 endpoint that is not a URL: making its storage client fails
    with an error that is no library error of ours."""
    env = {
        "DATABASE_URL": test_db.app,
        "GPU_CLUSTER_API_URL": "http://127.0.0.1:9",
        "GPU_CLUSTER_API_KEY": API_KEY,
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": "not a url",
        "S3_ACCESS_KEY_ID": "key",
        "S3_SECRET_ACCESS_KEY": "secret",
        "CRON_SECRET": SECRET,
    }
    with (
        function_log.open("wb") as log,
        start_function(SOURCE, "process_training_jobs", env=env, stdout=log) as server,
    ):
        yield server


def test_unexpected_error_is_a_json_500_with_its_traceback_in_the_log(
    broken_function: ServerProcess, function_log: Path
) -> None:
    """An error the library did not expect becomes the bare JSON 500 of the other functions;
    what went wrong is only in the log, as one entry with the traceback."""
    response = httpx.post(
        broken_function.base_url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=60
    )

    assert response.status_code == 500
    assert response.json() == {
        "success": False,
        "error": {"code": "internal", "message": "Something went wrong on our side."},
    }
    assert "not a url" not in response.text
    [entry] = [e for e in _log_entries(function_log) if e["message"] == "request failed"]
    assert entry["severity"] == "ERROR"
    assert entry["kind"] == "ValueError"
    assert "Invalid endpoint" in str(entry["stack_trace"])
