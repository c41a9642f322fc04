"""cancel-job over HTTP: the owner's active job is cancelled in the database at once, the cluster
is told (now, or by a later processor cycle), and nothing else can be cancelled."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from infra.local.processes import ServerProcess, start_function
from infra.local.s3 import LocalS3Server
from shared.models import JobStatus
from tests.api.conftest import CANCEL_JOB_SOURCE, Api, Caller, function_env
from tests.api.support import JOB_FIELDS, assert_error
from tests.api.tokens import JwksServer, SigningKey, user_claims
from tests.conftest import ClonedDatabase
from tests.factories import make_job, make_user
from tests.processor.conftest import Stack


def job_row(conn: psycopg.Connection, job_id: uuid.UUID) -> dict[str, Any]:
    row = conn.execute(
        "select to_jsonb(j) from training_jobs j where id = %s", (job_id,)
    ).fetchone()
    assert row is not None
    result: dict[str, Any] = row[0]
    return result


def count(conn: psycopg.Connection, query: str, *params: object) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def compute_charges(conn: psycopg.Connection, job_id: uuid.UUID) -> int:
    return count(
        conn,
        "select count(*) from cost_records where job_id = %s and cost_type = 'training_compute'",
        job_id,
    )


def final_notices(conn: psycopg.Connection, job_id: uuid.UUID) -> int:
    return count(
        conn,
        "select count(*) from notifications where job_id = %s"
        " and type in ('training_completed', 'training_failed', 'training_cancelled')",
        job_id,
    )


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.INITIALIZING, JobStatus.RUNNING])
def test_owner_cancels_an_active_job(
    api: Api, api_admin: psycopg.Connection, owner: Caller, status: JobStatus
) -> None:
    """The owner's queued, initializing or running job is cancelled at once: 200 with the job in
    get-job's shape, a final cost, exactly one cost record and one notification."""
    job_id = make_job(api_admin, owner.user_id, status=status)

    response = api.cancel(job_id, owner.token)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    job = body["data"]["job"]
    assert set(job) == JOB_FIELDS
    assert job["id"] == str(job_id)
    assert job["status"] == "cancelled"
    assert job["completed_at"] is not None
    assert job["cancel_requested_at"] is not None
    assert job["final_cost"] is not None
    assert job["current_cost"] == job["final_cost"]
    stored = job_row(api_admin, job_id)
    assert stored["status"] == "cancelled"
    assert compute_charges(api_admin, job_id) == 1
    assert final_notices(api_admin, job_id) == 1


@pytest.mark.parametrize(
    "status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED], ids=str
)
def test_a_finished_job_is_409_with_its_status(
    api: Api, api_admin: psycopg.Connection, owner: Caller, status: JobStatus
) -> None:
    """A job that has already ended is a 409 that names its status, and stays as it was."""
    job_id = make_job(api_admin, owner.user_id, status=status)
    before = job_row(api_admin, job_id)

    response = api.cancel(job_id, owner.token)

    assert response.status_code == 409
    assert_error(response.json(), "conflict")
    assert f"already {status.value}" in response.json()["error"]["message"]
    assert job_row(api_admin, job_id) == before
    assert compute_charges(api_admin, job_id) == 1


def test_a_second_cancel_is_409(api: Api, api_admin: psycopg.Connection, owner: Caller) -> None:
    """Cancelling twice: the first succeeds, the second is a 409, and the job is charged once."""
    job_id = make_job(api_admin, owner.user_id, status=JobStatus.RUNNING)

    assert api.cancel(job_id, owner.token).status_code == 200
    again = api.cancel(job_id, owner.token)

    assert again.status_code == 409
    assert "already cancelled" in again.json()["error"]["message"]
    assert compute_charges(api_admin, job_id) == 1
    assert final_notices(api_admin, job_id) == 1


def test_another_users_job_is_404_and_untouched(
    api: Api, api_admin: psycopg.Connection, owner: Caller, stranger: Caller
) -> None:
    """A stranger's cancel is a 404 exactly like a missing job's, and the job keeps running."""
    job_id = make_job(api_admin, owner.user_id, status=JobStatus.RUNNING)

    theirs = api.cancel(job_id, stranger.token)
    missing = api.cancel(uuid.uuid4(), stranger.token)

    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    assert job_row(api_admin, job_id)["status"] == "running"
    assert compute_charges(api_admin, job_id) == 0


@pytest.mark.parametrize(
    "token",
    [None, "not.a.jwt", "expired"],
    ids=["anonymous", "garbage", "expired"],
)
def test_without_a_valid_token_nothing_is_cancelled(
    api: Api,
    api_admin: psycopg.Connection,
    owner: Caller,
    es256_key: SigningKey,
    token: str | None,
) -> None:
    """No token, a malformed one or an expired one: 401, and the job keeps running."""
    job_id = make_job(api_admin, owner.user_id, status=JobStatus.RUNNING)
    if token == "expired":
        token = es256_key.sign(user_claims(owner.user_id, expires_in=-120))

    response = api.cancel(job_id, token)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert job_row(api_admin, job_id)["status"] == "running"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_only_post_is_allowed(api: Api, owner: Caller, method: str) -> None:
    """Other methods are 405 with the Allow header."""
    response = api.http.request(
        method,
        f"{api.cancel_job_url}/{uuid.uuid4()}",
        headers={"Authorization": f"Bearer {owner.token}"},
    )

    assert response.status_code == 405
    assert response.headers["allow"] == "POST, OPTIONS"
    assert_error(response.json(), "method_not_allowed")


def test_the_job_id_comes_in_the_path(api: Api, owner: Caller) -> None:
    """No id in the path, or not a UUID: 400."""
    headers = {"Authorization": f"Bearer {owner.token}"}
    for url in (api.cancel_job_url + "/", f"{api.cancel_job_url}/job-1"):
        response = api.http.post(url, headers=headers)
        assert response.status_code == 400, url
        assert_error(response.json(), "bad_request")


def test_unreachable_cluster_still_cancels_and_leaves_the_delivery_pending(
    api: Api, api_admin: psycopg.Connection, owner: Caller
) -> None:
    """With the cluster unreachable (the session's functions point at a closed port) the cancel
    still stands, answered 200 without waiting, and is left for the processor to deliver."""
    job_id = make_job(api_admin, owner.user_id, status=JobStatus.RUNNING)
    external_id = f"ext-{uuid.uuid4()}"
    api_admin.execute(
        "update training_jobs set external_job_id = %s where id = %s", (external_id, job_id)
    )

    started = time.monotonic()
    response = api.cancel(job_id, owner.token)

    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 3
    stored = job_row(api_admin, job_id)
    assert stored["status"] == "cancelled"
    assert stored["cancel_delivered_at"] is None
    pending = api_admin.execute("select processor_pending_cancels(1000)").fetchone()
    assert pending is not None
    assert [
        {"job_id": p["job_id"], "external_job_id": p["external_job_id"]} for p in pending[0]
    ] == [{"job_id": str(job_id), "external_job_id": external_id}]


# --- against the real cluster simulator and processor -------------------------------------------


@pytest.fixture
def cancel_function(
    stack: Stack, jwks: JwksServer, test_db: ClonedDatabase, s3_server: LocalS3Server
) -> Iterator[str]:
    """cancel-job served against the Stack's database and its cluster simulator."""
    env = function_env(test_db, jwks, stack.sim.base_url, s3_server.endpoint_url)
    server: ServerProcess
    with start_function(CANCEL_JOB_SOURCE, "cancel_job", env=env) as server:
        yield server.base_url


def _running_job(stack: Stack, es256_key: SigningKey) -> tuple[uuid.UUID, str, str]:
    """A job the processor has submitted and seen running; its id, external id, owner token."""
    stack.sim.configure(steps_per_second=2)
    user_id = make_user(stack.admin)
    job_id = stack.queued_job(user_id=user_id)
    stack.run_until(lambda: stack.status(job_id) is JobStatus.RUNNING, pause=0.2)
    external_id = stack.job(job_id)["external_job_id"]
    return job_id, external_id, es256_key.sign(user_claims(user_id))


def test_running_job_is_cancelled_at_the_cluster_too(
    stack: Stack, cancel_function: str, es256_key: SigningKey
) -> None:
    """A job running on the cluster is cancelled in the database and at the cluster in the same
    request; the delivery is recorded, so the processor has nothing left to send."""
    job_id, external_id, token = _running_job(stack, es256_key)

    response = httpx.post(
        f"{cancel_function}/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )

    assert response.status_code == 200, response.text
    assert stack.sim.job(external_id)["status"] == "cancelled"
    assert stack.sim.job(external_id)["cancel_requests"] == 1
    job = stack.job(job_id)
    assert job["status"] == "cancelled"
    assert job["cancel_delivered_at"] is not None
    assert stack.cycle().cancels_delivered == 0
    assert compute_charges(stack.admin, job_id) == 1


def test_a_queued_job_is_cancelled_at_once_without_the_cluster(
    stack: Stack, cancel_function: str, es256_key: SigningKey
) -> None:
    """Cancelling a job still in the queue touches nothing at the cluster, then or later: no
    request reaches it, nothing is left to deliver, and its slot in the queue is free at once."""
    user_id = make_user(stack.admin)
    job_id = stack.queued_job(user_id=user_id)
    token = es256_key.sign(user_claims(user_id))

    response = httpx.post(
        f"{cancel_function}/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )

    assert response.status_code == 200, response.text
    job = stack.job(job_id)
    assert job["status"] == "cancelled"
    assert job["cancel_delivered_at"] is not None
    assert job["idempotency_key"] is None
    assert Decimal(str(job["final_cost"])) == 0
    summary = stack.cycle()
    assert (summary.claimed, summary.cancels_delivered) == (0, 0)
    assert stack.sim.requests() == {"submit": 0, "status": 0, "cancel": 0}


def test_cluster_down_on_cancel_is_delivered_by_a_later_cycle(
    stack: Stack, cancel_function: str, es256_key: SigningKey
) -> None:
    """When the cluster drops the cancel the job is still cancelled (200, its cost stopped), and
    the next processor cycle tells the cluster."""
    job_id, external_id, token = _running_job(stack, es256_key)
    stack.sim.inject({"endpoint": "cancel", "kind": "refuse", "times": 1})

    response = httpx.post(
        f"{cancel_function}/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )

    assert response.status_code == 200, response.text
    assert response.json()["data"]["job"]["status"] == "cancelled"
    assert stack.job(job_id)["cancel_delivered_at"] is None
    assert stack.sim.job(external_id)["status"] == "running"

    assert stack.cycle().cancels_delivered == 1
    assert stack.sim.job(external_id)["status"] == "cancelled"
    assert stack.job(job_id)["cancel_delivered_at"] is not None
    assert compute_charges(stack.admin, job_id) == 1


# --- cancel racing the processor's completion ---------------------------------------------------


def _complete_as_processor(conninfo: str, job_id: uuid.UUID, hold_seconds: float = 0) -> None:
    """The processor's finishing write, guarded by status as processor_record_polls does it;
    optionally holding the row for a while before committing."""
    with psycopg.connect(conninfo) as conn:
        conn.execute("set role service_role")
        conn.execute(
            "update training_jobs set status = 'completed'"
            " where id = %s and status in ('initializing', 'running')",
            (job_id,),
        )
        time.sleep(hold_seconds)
        conn.commit()


def test_cancel_waiting_on_a_completion_answers_409_completed(
    api: Api, api_admin: psycopg.Connection, api_db: ClonedDatabase, owner: Caller
) -> None:
    """A cancel that arrives while the processor is committing the job's completion waits for
    it, then answers 409 naming `completed`; the job is charged once."""
    job_id = make_job(api_admin, owner.user_id, status=JobStatus.RUNNING)
    finisher = threading.Thread(target=_complete_as_processor, args=(api_db.app, job_id, 0.5))
    finisher.start()
    time.sleep(0.2)

    response = api.cancel(job_id, owner.token)
    finisher.join()

    assert response.status_code == 409, response.text
    assert "already completed" in response.json()["error"]["message"]
    assert job_row(api_admin, job_id)["status"] == "completed"
    assert compute_charges(api_admin, job_id) == 1
    assert final_notices(api_admin, job_id) == 1


def test_cancel_and_completion_racing_end_in_one_consistent_state(
    api: Api, api_admin: psycopg.Connection, api_db: ClonedDatabase, owner: Caller
) -> None:
    """Cancel and completion started together, many times: each job ends either cancelled
    (and the cancel said 200) or completed (and the cancel said 409), with one cost record and
    one final notification, never two."""
    jobs = [make_job(api_admin, owner.user_id, status=JobStatus.RUNNING) for _ in range(12)]
    answers: dict[uuid.UUID, int] = {}

    def cancel(job_id: uuid.UUID, start: threading.Barrier) -> None:
        start.wait()
        answers[job_id] = api.cancel(job_id, owner.token).status_code

    def complete(job_id: uuid.UUID, start: threading.Barrier) -> None:
        start.wait()
        _complete_as_processor(api_db.app, job_id)

    for job_id in jobs:
        start = threading.Barrier(2)
        threads = [
            threading.Thread(target=cancel, args=(job_id, start)),
            threading.Thread(target=complete, args=(job_id, start)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    for job_id in jobs:
        status = job_row(api_admin, job_id)["status"]
        assert (status, answers[job_id]) in {("cancelled", 200), ("completed", 409)}
        assert compute_charges(api_admin, job_id) == 1
        assert final_notices(api_admin, job_id) == 1
