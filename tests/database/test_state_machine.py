"""The job state machine, enforced by the database for every role, and what finishing a job brings.

Every (from, to) pair is tried as the service role, which bypasses RLS but not the trigger.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

import psycopg
import pytest

from shared.models import ALLOWED_TRANSITIONS, JobStatus
from tests.factories import make_dataset, make_job, make_user, set_status

PAIRS = [(a, b) for a, b in itertools.product(JobStatus, JobStatus) if a != b]
ALLOWED = [(a, b) for a, b in PAIRS if b in ALLOWED_TRANSITIONS[a]]
REFUSED = [(a, b) for a, b in PAIRS if b not in ALLOWED_TRANSITIONS[a]]


def _ids(pairs: list[tuple[JobStatus, JobStatus]]) -> list[str]:
    return [f"{a}->{b}" for a, b in pairs]


def _status(conn: psycopg.Connection, job_id: object) -> str:
    row = conn.execute("select status from training_jobs where id = %s", (job_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_python_and_database_agree_on_every_transition(admin_conn: psycopg.Connection) -> None:
    """shared.models.ALLOWED_TRANSITIONS is exactly public.job_transition_allowed."""
    rows = admin_conn.execute(
        "select a::text, b::text, public.job_transition_allowed(a, b)"
        " from unnest(enum_range(null::job_status)) a, unnest(enum_range(null::job_status)) b"
    ).fetchall()
    assert len(rows) == 36
    for a, b, allowed in rows:
        assert allowed == (JobStatus(b) in ALLOWED_TRANSITIONS[JobStatus(a)]), (a, b)


@pytest.mark.parametrize(("start", "target"), ALLOWED, ids=_ids(ALLOWED))
def test_allowed_transition_succeeds_for_service_role(
    admin_conn: psycopg.Connection,
    service_conn: psycopg.Connection,
    start: JobStatus,
    target: JobStatus,
) -> None:
    """An allowed transition goes through for the service role."""
    job_id = make_job(admin_conn, make_user(admin_conn), status=start)
    set_status(service_conn, job_id, target)
    assert _status(admin_conn, job_id) == target.value


@pytest.mark.parametrize(("start", "target"), REFUSED, ids=_ids(REFUSED))
def test_refused_transition_raises_for_service_role(
    admin_conn: psycopg.Connection,
    service_conn: psycopg.Connection,
    start: JobStatus,
    target: JobStatus,
) -> None:
    """A refused transition raises SQLSTATE PT409 with a message naming both statuses."""
    job_id = make_job(admin_conn, make_user(admin_conn), status=start)
    with pytest.raises(psycopg.Error) as caught:
        set_status(service_conn, job_id, target)
    assert caught.value.sqlstate == "PT409"
    message = caught.value.diag.message_primary or ""
    if start.is_terminal:
        assert message == f"training job {job_id} is already {start}; it cannot become {target}"
    else:
        assert message == f"training job {job_id} cannot go from {start} to {target}"
    assert _status(admin_conn, job_id) == start.value


def test_refused_transition_applies_to_superuser_too(admin_conn: psycopg.Connection) -> None:
    """Even the table owner cannot move a job out of a terminal state."""
    job_id = make_job(admin_conn, make_user(admin_conn), status=JobStatus.COMPLETED)
    with pytest.raises(psycopg.Error, match="already completed"):
        set_status(admin_conn, job_id, JobStatus.RUNNING)


@pytest.mark.parametrize("status", [s for s in JobStatus if s is not JobStatus.QUEUED])
def test_new_job_must_start_queued(
    admin_conn: psycopg.Connection, service_conn: psycopg.Connection, status: JobStatus
) -> None:
    """A job inserted with any status but queued is refused."""
    user_id = make_user(admin_conn)
    dataset_id = make_dataset(admin_conn, user_id)
    with pytest.raises(psycopg.Error) as caught:
        service_conn.execute(
            "insert into training_jobs (user_id, dataset_id, status) values (%s, %s, %s)",
            (user_id, dataset_id, status.value),
        )
    assert caught.value.sqlstate == "PT409"
    assert caught.value.diag.message_primary == (
        f"a new training job must start as queued, not {status}"
    )


def test_same_status_update_is_not_a_transition(
    admin_conn: psycopg.Connection, service_conn: psycopg.Connection
) -> None:
    """Writing progress on a running job (status unchanged) is allowed."""
    job_id = make_job(admin_conn, make_user(admin_conn), status=JobStatus.RUNNING)
    service_conn.execute(
        "update training_jobs set status = 'running', progress = 40 where id = %s", (job_id,)
    )
    row = admin_conn.execute("select progress from training_jobs where id = %s", (job_id,))
    assert row.fetchone() == (Decimal("40.00"),)


def test_running_sets_started_at(admin_conn: psycopg.Connection) -> None:
    """Entering running stamps started_at once."""
    job_id = make_job(admin_conn, make_user(admin_conn), status=JobStatus.RUNNING)
    row = admin_conn.execute(
        "select started_at is not null, completed_at from training_jobs where id = %s", (job_id,)
    ).fetchone()
    assert row == (True, None)


def test_completion_writes_final_cost_one_cost_record_and_one_notification(
    admin_conn: psycopg.Connection, service_conn: psycopg.Connection
) -> None:
    """Completing a job sets completed_at, progress 100 and the final cost, and writes one cost
    record and one notification for the owner."""
    user_id = make_user(admin_conn)
    job_id = make_job(
        admin_conn,
        user_id,
        status=JobStatus.RUNNING,
        gpu_config={"gpu_type": "A100", "gpu_count": 2},
    )
    # Two hours of two A100s at the seeded 2.90/h.
    admin_conn.execute(
        "update training_jobs set started_at = now() - interval '2 hours' where id = %s", (job_id,)
    )
    set_status(service_conn, job_id, JobStatus.COMPLETED)
    job = admin_conn.execute(
        "select progress, final_cost, current_cost, completed_at is not null, next_poll_at"
        " from training_jobs where id = %s",
        (job_id,),
    ).fetchone()
    assert job is not None
    progress, final_cost, current_cost, completed, next_poll = job
    assert progress == Decimal(100)
    assert Decimal("11.59") <= final_cost <= Decimal("11.61")
    assert current_cost == final_cost
    assert completed
    assert next_poll is None

    costs = admin_conn.execute(
        "select user_id, cost_type, amount, details->>'gpu_count' from cost_records"
        " where job_id = %s",
        (job_id,),
    ).fetchall()
    assert costs == [(user_id, "training_compute", final_cost, "2")]
    notes = admin_conn.execute(
        "select user_id, type, title, dedupe_key from notifications where job_id = %s", (job_id,)
    ).fetchall()
    assert notes == [
        (user_id, "training_completed", "Training completed", f"job:{job_id}:completed")
    ]


def test_writer_supplied_final_cost_is_kept(
    admin_conn: psycopg.Connection, service_conn: psycopg.Connection
) -> None:
    """A final cost the processor computed from the cluster's clock wins over the trigger's."""
    job_id = make_job(admin_conn, make_user(admin_conn), status=JobStatus.RUNNING)
    service_conn.execute(
        "update training_jobs set status = 'completed', final_cost = 1.2345 where id = %s",
        (job_id,),
    )
    amount = admin_conn.execute(
        "select amount from cost_records where job_id = %s", (job_id,)
    ).fetchall()
    assert amount == [(Decimal("1.2345"),)]


def test_failure_notification_carries_the_error(
    admin_conn: psycopg.Connection, service_conn: psycopg.Connection
) -> None:
    """A failed job's notification says why, with high priority; a never-run job costs 0."""
    job_id = make_job(admin_conn, make_user(admin_conn), status=JobStatus.INITIALIZING)
    service_conn.execute(
        "update training_jobs set status = 'failed', error_message = %s where id = %s",
        ("dataset file not found", job_id),
    )
    note = admin_conn.execute(
        "select message, priority from notifications where job_id = %s", (job_id,)
    ).fetchall()
    assert note == [
        ('Your LoRA training on "Support replies" failed: dataset file not found', "high")
    ]
    cost = admin_conn.execute("select amount from cost_records where job_id = %s", (job_id,))
    assert cost.fetchall() == [(Decimal(0),)]


def test_a_second_cost_record_for_a_job_is_refused(admin_conn: psycopg.Connection) -> None:
    """The database keeps one compute charge per job, whoever tries to add another."""
    user_id = make_user(admin_conn)
    job_id = make_job(admin_conn, user_id, status=JobStatus.CANCELLED)
    with pytest.raises(psycopg.errors.UniqueViolation):
        admin_conn.execute(
            "insert into cost_records (user_id, job_id, cost_type, amount, billing_period)"
            " values (%s, %s, 'training_compute', 1, '2026-11')",
            (user_id, job_id),
        )
