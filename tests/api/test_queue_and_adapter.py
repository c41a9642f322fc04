"""get-job on a queued job (its place in line and why it waits) and on a completed one (signed
URLs that download its adapter)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from infra.local.s3 import LocalS3Server
from shared.models import JobStatus
from shared.storage import adapter_location
from shared.training_events import ADAPTER_FILES
from tests.api.conftest import Api, Caller
from tests.factories import make_job


@pytest.fixture
def gpu(api_admin: psycopg.Connection) -> Any:
    """A GPU type of this test's own (the API's database is shared by the session), with a price
    and the capacity asked for; the jobs it makes use it."""
    gpu_type = f"T{uuid.uuid4().hex[:8]}"

    def make(capacity: int | None) -> dict[str, Any]:
        api_admin.execute(
            "insert into gpu_prices (gpu_type, hourly_rate, max_active_jobs) values (%s, 1, %s)",
            (gpu_type, capacity),
        )
        return {"gpu_type": gpu_type, "gpu_count": 1}

    return make


def _queue(api: Api, caller: Caller, job_id: uuid.UUID) -> dict[str, Any]:
    response = api.get(job_id, caller.token)
    assert response.status_code == 200, response.text
    queue: dict[str, Any] = response.json()["data"]["queue"]
    return queue


def test_a_user_at_their_limit_is_told_so(
    api: Api, api_admin: psycopg.Connection, owner: Caller, gpu: Any
) -> None:
    """With 2 of 2 jobs running (the default limit), the queued job says so."""
    config = gpu(None)
    for _ in range(2):
        make_job(api_admin, owner.user_id, status=JobStatus.RUNNING, gpu_config=config)
    job_id = make_job(api_admin, owner.user_id, gpu_config=config)
    queue = _queue(api, owner, job_id)
    assert queue["reason"] == "user_limit"
    assert queue["message"] == "You have 2 of 2 jobs running."
    assert queue["position"] == 1


def test_a_full_gpu_type_is_told_with_its_capacity(
    api: Api, api_admin: psycopg.Connection, owner: Caller, make_caller: Any, gpu: Any
) -> None:
    """When every slot of the job's GPU type is taken by others, the queued job says so."""
    config = gpu(1)
    other = make_caller()
    make_job(api_admin, other.user_id, status=JobStatus.RUNNING, gpu_config=config)
    job_id = make_job(api_admin, owner.user_id, gpu_config=config)
    queue = _queue(api, owner, job_id)
    assert queue["reason"] == "gpu_capacity"
    assert queue["message"] == f"All 1 {config['gpu_type']} slots are busy."


def test_position_counts_fairness_not_age(
    api: Api, api_admin: psycopg.Connection, owner: Caller, make_caller: Any, gpu: Any
) -> None:
    """A job queued after another user's three is second in line, not fourth: round-robin puts
    it right after that user's first; with an average run time known, the start is estimated."""
    config = gpu(4)
    busy = make_caller()
    done = make_job(api_admin, busy.user_id, status=JobStatus.COMPLETED, gpu_config=config)
    api_admin.execute(
        "update training_jobs set run_started_at = now() - interval '1 hour',"
        " run_ended_at = now() - interval '30 minutes' where id = %s",
        (done,),
    )
    for _ in range(3):
        make_job(api_admin, busy.user_id, gpu_config=config)
    job_id = make_job(api_admin, owner.user_id, gpu_config=config)
    queue = _queue(api, owner, job_id)
    assert queue["reason"] == "in_line"
    assert queue["position"] == 2
    assert queue["message"] == f"In line: 1 job ahead of yours on {config['gpu_type']}."
    # One wave ahead (position 2 of 4 slots) of 30-minute runs, rounded to the minute.
    starts = datetime.fromisoformat(queue["estimated_start_at"])
    assert timedelta(minutes=29) <= starts - datetime.now(UTC) <= timedelta(minutes=32)


def test_only_queued_jobs_have_a_queue(
    api: Api, api_admin: psycopg.Connection, owner: Caller
) -> None:
    """A running job has no place in line."""
    job_id = make_job(api_admin, owner.user_id, status=JobStatus.RUNNING)
    assert _queue(api, owner, job_id) is None


def _complete_with_adapter(
    api_admin: psycopg.Connection, s3_server: LocalS3Server, user_id: uuid.UUID, upload: bool
) -> uuid.UUID:
    job_id = make_job(api_admin, user_id, status=JobStatus.RUNNING)
    api_admin.execute(
        "update training_jobs set status = 'completed', artifact_location = %s where id = %s",
        (adapter_location(user_id, job_id), job_id),
    )
    if upload:
        client = s3_server.client()
        for name in ADAPTER_FILES:
            client.put_object(
                Bucket="lora-artifacts",
                Key=f"{user_id}/{job_id}/adapter/{name}",
                Body=f"{name} of {job_id}".encode(),
            )
    return job_id


def test_a_completed_jobs_adapter_downloads_through_short_lived_urls(
    api: Api, api_admin: psycopg.Connection, owner: Caller, s3_server: LocalS3Server
) -> None:
    """The owner of a completed job gets a signed URL per adapter file that downloads it; the
    URLs are fresh on every answer, and an unchanged job still gets its 304."""
    job_id = _complete_with_adapter(api_admin, s3_server, owner.user_id, upload=True)
    first = api.get(job_id, owner.token)
    assert first.status_code == 200, first.text
    adapter = first.json()["data"]["adapter"]
    assert set(adapter["files"]) == set(ADAPTER_FILES)
    assert adapter["expires_at"]
    for name, url in adapter["files"].items():
        assert httpx.get(url).content == f"{name} of {job_id}".encode()
    again = api.get(job_id, owner.token, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


def test_no_download_without_a_stored_adapter(
    api: Api, api_admin: psycopg.Connection, owner: Caller, s3_server: LocalS3Server
) -> None:
    """A completed job whose run stored nothing, or stored it elsewhere, offers no download."""
    missing = _complete_with_adapter(api_admin, s3_server, owner.user_id, upload=False)
    assert api.get(missing, owner.token).json()["data"]["adapter"] is None
    elsewhere = make_job(api_admin, owner.user_id, status=JobStatus.COMPLETED)
    api_admin.execute(
        "update training_jobs set artifact_location = 's3://elsewhere/adapter/' where id = %s",
        (elsewhere,),
    )
    assert api.get(elsewhere, owner.token).json()["data"]["adapter"] is None
