"""The processor under overlap, crashes and cluster faults."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import psycopg

from shared.cluster import SubmitRequest
from shared.models import JobStatus
from shared.processor import CycleSummary
from tests.factories import claims_for
from tests.processor.conftest import Stack

TERMINAL = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


def _all_terminal(stack: Stack) -> bool:
    return (
        stack.count(
            "select count(*) from training_jobs where status not in"
            " ('completed', 'failed', 'cancelled')"
        )
        == 0
    )


def test_four_overlapping_processors_submit_each_job_exactly_once(stack: Stack) -> None:
    """4 processors cycling at the same time over 200 queued jobs: every job is submitted once
    (the simulator's own counts), every job finishes, and nothing is stored twice."""
    path = stack.upload("lora-datasets")
    user_ids = [uuid.uuid4() for _ in range(10)]
    for user_id in user_ids:
        stack.admin.execute("insert into auth.users (id) values (%s)", (user_id,))
    for i in range(200):
        stack.queued_job(user_id=user_ids[i % 10], path=path)

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(80):
                stack.cycle(claim_batch_size=20)
                if _all_terminal(stack):
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert _all_terminal(stack)
    assert stack.count("select count(*) from training_jobs where status = 'completed'") == 200

    submissions = stack.sim.submissions()
    keys = [str(row[0]) for row in stack.admin.execute("select idempotency_key from training_jobs")]
    assert sorted(keys) == sorted(submissions)
    assert all(s["requests"] == 1 and s["jobs_created"] == 1 for s in submissions.values())
    assert stack.count("select count(distinct external_job_id) from training_jobs") == 200

    assert stack.count("select count(*) from metrics_points") == 200 * 75
    assert stack.count("select count(*) from cost_records") == 200
    assert (
        stack.count(
            "select count(*) from (select job_id, type from notifications"
            " where type <> 'training_progress' group by 1, 2 having count(*) > 1) d"
        )
        == 0
    )
    assert (
        stack.count("select count(*) from notifications where type = 'training_completed'") == 200
    )


def test_crash_after_the_cluster_accepted_does_not_submit_twice(stack: Stack) -> None:
    """A cycle that crashed after the cluster accepted a job, before its id was stored: the next
    cycle (once the lease expired) resubmits with the same key and carries on with the same
    external job."""
    job_id = stack.queued_job()
    crashed_owner = uuid.uuid4()
    [claimed] = stack.db.call(
        "processor_claim_queued",
        {
            "p_owner": crashed_owner,
            "p_limit": 1,
            "p_lease_seconds": 60,
            "p_default_user_limit": 10,
        },
    )
    url = stack.storage.signed_url(claimed["storage_bucket"], claimed["storage_path"])

    async def submit_then_crash() -> str:
        cluster = stack.cluster()
        try:
            result = await cluster.submit(
                SubmitRequest(
                    idempotency_key=claimed["idempotency_key"],
                    job_id=job_id,
                    dataset_url=url,
                    hyperparameters=claimed["hyperparameters"],
                    gpu_config=claimed["gpu_config"],
                )
            )
        finally:
            await cluster.aclose()
        return result.external_job_id

    accepted_id = asyncio.run(submit_then_crash())
    assert stack.job(job_id)["external_job_id"] is None

    # While the crashed cycle's lease holds, nobody touches the job.
    assert stack.cycle().claimed == 0
    stack.admin.execute(
        "update training_jobs set lease_expires_at = now() - interval '1 second' where id = %s",
        (job_id,),
    )
    summary = stack.cycle()
    assert (summary.claimed, summary.submitted) == (1, 1)
    assert stack.job(job_id)["external_job_id"] == accepted_id
    [submission] = stack.sim.submissions().values()
    assert submission == {"requests": 2, "jobs_created": 1, "external_job_id": accepted_id}

    stack.run_until(lambda: stack.status(job_id) in TERMINAL)
    assert stack.status(job_id) is JobStatus.COMPLETED


def test_transient_poll_errors_leave_the_job_alive_until_the_cluster_heals(stack: Stack) -> None:
    """503s, 429s, timeouts, malformed bodies and refused connections while polling: the job
    stays active, and completes once the cluster answers again."""
    job_id = stack.queued_job()
    stack.cycle()
    for kind in (
        {"kind": "http_error", "status": 503},
        {"kind": "rate_limit", "retry_after": 0},
        {"kind": "malformed"},
        {"kind": "refuse"},
        {"kind": "hang", "seconds": 3},
    ):
        stack.sim.inject({"endpoint": "status", **kind})
        summary = stack.cycle(max_attempts=10)
        assert summary.errors == 1, (kind, summary)
        stack.sim.inject()
        job = stack.job(job_id)
        assert job["status"] in {"initializing", "running"}, (kind, job["error_message"])
        assert job["lease_owner"] is None
    assert stack.job(job_id)["attempts"] == 5
    stack.sim._call("DELETE", "/_sim/faults")
    stack.run_until(lambda: stack.status(job_id) in TERMINAL)
    job = stack.job(job_id)
    assert job["status"] == "completed"
    assert job["attempts"] == 0


def test_transient_submit_errors_leave_the_job_queued_for_a_retry(stack: Stack) -> None:
    """A submission that meets 503s, then refused connections, is retried by later cycles with
    the same idempotency key, and the job completes once the cluster heals."""
    stack.sim.inject(
        {"endpoint": "submit", "kind": "http_error", "status": 503, "times": 2},
        {"endpoint": "submit", "kind": "refuse", "times": 2},
    )
    job_id = stack.queued_job()
    for attempt in (1, 2):
        summary = stack.cycle(max_attempts=5)
        assert (summary.claimed, summary.submitted, summary.errors) == (1, 0, 1)
        job = stack.job(job_id)
        assert (job["status"], job["attempts"], job["external_job_id"]) == (
            "initializing",
            attempt,
            None,
        )
    stack.run_until(lambda: stack.status(job_id) in TERMINAL)
    assert stack.status(job_id) is JobStatus.COMPLETED
    [submission] = stack.sim.submissions().values()
    assert submission["jobs_created"] == 1


def test_permanent_rejection_fails_the_job_with_the_clusters_message(stack: Stack) -> None:
    """A 4xx on submission fails the job at once with the cluster's own message."""
    stack.sim.inject(
        {
            "endpoint": "submit",
            "kind": "http_error",
            "status": 422,
            "message": "gpu_type H900 is not offered",
        }
    )
    job_id = stack.queued_job()
    summary = stack.cycle()
    assert summary.failed == 1
    job = stack.job(job_id)
    assert job["status"] == "failed"
    assert "The GPU cluster refused the job" in job["error_message"]
    assert "gpu_type H900 is not offered" in job["error_message"]
    assert stack.sim.requests()["submit"] == 1


def test_transient_errors_beyond_the_attempt_limit_fail_the_job(stack: Stack) -> None:
    """A cluster that stays unavailable fails the job after max_attempts cycles, saying so."""
    stack.sim.inject({"endpoint": "submit", "kind": "http_error", "status": 503})
    job_id = stack.queued_job()
    for attempt in range(1, 3):
        stack.cycle(max_attempts=3)
        job = stack.job(job_id)
        assert (job["status"], job["attempts"]) == ("initializing", attempt)
    stack.cycle(max_attempts=3)
    job = stack.job(job_id)
    assert job["status"] == "failed"
    assert job["error_message"].startswith("The GPU cluster could not be reached after 3 attempts")


def test_job_failing_mid_run_is_failed_with_the_clusters_error(stack: Stack) -> None:
    """A run the cluster reports failed ends failed, with the cluster's message and a notice."""
    stack.sim.configure(steps_per_second=20)
    job_id = stack.queued_job()
    stack.cycle()
    external = stack.job(job_id)["external_job_id"]
    stack.sim.fail_at_step(external, 10, "CUDA out of memory")
    stack.run_until(lambda: stack.status(job_id) in TERMINAL, pause=0.2)
    job = stack.job(job_id)
    assert job["status"] == "failed"
    assert job["error_message"] == "CUDA out of memory"
    assert (
        stack.count(
            "select count(*) from notifications where job_id = %s and type = 'training_failed'",
            job_id,
        )
        == 1
    )


def _cancel_as_owner(stack: Stack, job_id: uuid.UUID) -> None:
    """The owner's own cancel, as PostgREST would run it: as `authenticated` with their claims."""
    owner = uuid.UUID(stack.job(job_id)["user_id"])
    with psycopg.connect(stack.test_db.app, autocommit=True) as conn:
        conn.execute("set role authenticated")
        conn.execute(
            "select set_config('request.jwt.claims', %s, false)", (json.dumps(claims_for(owner)),)
        )
        conn.execute("update training_jobs set status = 'cancelled' where id = %s", (job_id,))


def _cycle_in_background(stack: Stack) -> tuple[threading.Thread, list[CycleSummary]]:
    out: list[CycleSummary] = []
    thread = threading.Thread(target=lambda: out.append(stack.cycle()))
    thread.start()
    return thread, out


def test_cancel_during_submission_reaches_the_cluster(stack: Stack) -> None:
    """A cancel that arrives while the submission is in flight ends cancelled: the external id
    is still recorded, and the cluster is told in the same cycle."""
    stack.sim.inject({"endpoint": "submit", "kind": "latency", "seconds": 0.6})
    job_id = stack.queued_job()
    thread, _ = _cycle_in_background(stack)
    _wait_for(lambda: stack.status(job_id) is JobStatus.INITIALIZING)
    _cancel_as_owner(stack, job_id)
    thread.join()
    job = stack.job(job_id)
    assert job["status"] == "cancelled"
    assert job["external_job_id"]
    assert job["cancel_delivered_at"] is not None
    assert stack.sim.job(job["external_job_id"])["status"] == "cancelled"


def test_cancel_during_submission_is_delivered_once_the_cluster_is_back(stack: Stack) -> None:
    """When the cluster refuses the cancel right after the submission, a later cycle delivers
    it."""
    stack.sim.inject(
        {"endpoint": "submit", "kind": "latency", "seconds": 0.6},
        {"endpoint": "cancel", "kind": "refuse"},
    )
    job_id = stack.queued_job()
    thread, out = _cycle_in_background(stack)
    _wait_for(lambda: stack.status(job_id) is JobStatus.INITIALIZING)
    _cancel_as_owner(stack, job_id)
    thread.join()
    job = stack.job(job_id)
    assert (job["status"], job["cancel_delivered_at"]) == ("cancelled", None)
    assert out[0].cancels_delivered == 0
    stack.sim._call("DELETE", "/_sim/faults")
    assert stack.cycle().cancels_delivered == 1
    assert stack.sim.job(job["external_job_id"])["status"] == "cancelled"


def test_cancel_during_a_submission_that_got_no_answer_still_stops_the_run(
    stack: Stack,
) -> None:
    """The cluster accepts a submission but its answer never arrives, and the owner cancels
    meanwhile: the processor learns the run under the same idempotency key and stops it."""
    # Both attempts time out (read timeout 1 s); the cluster starts the run anyway.
    stack.sim.configure(steps_per_second=2)
    stack.sim.inject({"endpoint": "submit", "kind": "latency", "seconds": 1.5, "times": 2})
    job_id = stack.queued_job()
    thread, out = _cycle_in_background(stack)
    _wait_for(lambda: stack.status(job_id) is JobStatus.INITIALIZING)
    _cancel_as_owner(stack, job_id)
    thread.join()
    assert out[0].submitted == 0
    job = stack.job(job_id)
    assert job["status"] == "cancelled"
    if job["cancel_delivered_at"] is None:
        # The run appeared after this cycle's delivery attempt: the next cycle stops it.
        asyncio.run(asyncio.sleep(1.0))
        assert stack.cycle().cancels_delivered == 1
        job = stack.job(job_id)
    [submission] = stack.sim.submissions().values()
    assert submission["jobs_created"] == 1
    assert job["external_job_id"] == submission["external_job_id"]
    assert job["cancel_delivered_at"] is not None
    assert stack.sim.job(job["external_job_id"])["status"] == "cancelled"


def test_cancel_of_a_job_never_submitted_needs_no_delivery(stack: Stack) -> None:
    """A job cancelled while still queued is never sent to the cluster, and nothing is left
    pending for it."""
    job_id = stack.queued_job()
    _cancel_as_owner(stack, job_id)
    summary = stack.cycle()
    assert (summary.claimed, summary.cancels_delivered, summary.errors) == (0, 0, 0)
    job = stack.job(job_id)
    assert job["cancel_delivered_at"] is not None
    assert stack.sim.requests() == {"submit": 0, "status": 0, "cancel": 0}


def test_cancel_during_polling_reaches_the_cluster_even_if_it_was_down(stack: Stack) -> None:
    """A cancel arriving while a poll is in flight ends cancelled; the cluster, down when the
    cancel is first delivered, is told by a later cycle."""
    stack.sim.configure(steps_per_second=5)
    job_id = stack.queued_job()
    stack.run_until(lambda: stack.status(job_id) is JobStatus.RUNNING, pause=0.2)
    external = stack.job(job_id)["external_job_id"]

    stack.sim.inject(
        {"endpoint": "status", "kind": "latency", "seconds": 0.6},
        {"endpoint": "cancel", "kind": "refuse"},
    )
    thread, out = _cycle_in_background(stack)
    _wait_for(lambda: stack.job(job_id)["lease_owner"] is not None)
    _cancel_as_owner(stack, job_id)
    thread.join()
    job = stack.job(job_id)
    assert job["status"] == "cancelled"
    assert job["cancel_delivered_at"] is None
    assert out[0].cancels_delivered == 0
    assert stack.sim.job(external)["status"] == "running"

    stack.sim._call("DELETE", "/_sim/faults")
    summary = stack.cycle()
    assert summary.cancels_delivered == 1
    assert stack.job(job_id)["cancel_delivered_at"] is not None
    assert stack.sim.job(external)["status"] == "cancelled"
    assert stack.cycle().cancels_delivered == 0


def test_budget_cap_cancels_the_job_and_says_why(stack: Stack) -> None:
    """A job whose running cost reaches hyperparameters.max_cost is cancelled, with the reason in
    its error message and notification, and the cluster is told."""
    stack.sim.configure(steps_per_second=2)
    job_id = stack.queued_job(
        gpu_config={"gpu_type": "H100", "gpu_count": 8},
        hyperparameters={"epochs": 3, "max_cost": 0.005},
    )
    stack.run_until(lambda: stack.status(job_id) in TERMINAL, pause=0.2)
    job = stack.job(job_id)
    assert job["status"] == "cancelled"
    assert job["error_message"] == "it reached its budget of $0.005"
    assert job["cancel_delivered_at"] is not None
    assert stack.sim.job(job["external_job_id"])["status"] == "cancelled"
    [message] = [
        row[0]
        for row in stack.admin.execute(
            "select message from notifications where job_id = %s and type = 'training_cancelled'",
            (job_id,),
        )
    ]
    assert "it reached its budget of $0.005" in message


def test_stalled_warning_fires_once(stack: Stack) -> None:
    """A running job that reports no new step for far longer than usual gets one warning, and
    shows since when it has been stalled."""
    # A run's pace is fixed when it is submitted: this one is running but never finishes a step,
    # whatever the machine's load.
    stack.sim.configure(steps_per_second=0.0001, init_seconds=0)
    job_id = stack.queued_job()
    stack.run_until(lambda: stack.status(job_id) is JobStatus.RUNNING, pause=0.1)
    assert stack.job(job_id)["stalled_since"] is None
    for _ in range(6):
        asyncio.run(asyncio.sleep(0.3))
        stack.cycle(stall_min_seconds=0.2, stall_factor=2)
    job = stack.job(job_id)
    assert job["stalled_since"] == job["last_progress_at"]
    assert (
        stack.count(
            "select count(*) from notifications where job_id = %s and type = 'training_stalled'",
            job_id,
        )
        == 1
    )


def test_a_cycle_that_lost_its_lease_changes_nothing(stack: Stack) -> None:
    """Results recorded by a cycle whose lease expired and was taken over are ignored."""
    stack.sim.configure(steps_per_second=5)
    job_id = stack.queued_job()
    stack.cycle()
    late, current = uuid.uuid4(), uuid.uuid4()
    stack.claim_polls(late)
    stack.admin.execute(
        "update training_jobs set lease_expires_at = now() - interval '1 second' where id = %s",
        (job_id,),
    )
    [taken] = stack.claim_polls(current)
    assert taken["job_id"] == str(job_id)
    before = stack.job(job_id)
    points = "select count(*) from metrics_points where job_id = %s"
    points_before = stack.count(points, job_id)
    late_result: dict[str, Any] = {
        "job_id": str(job_id),
        "outcome": "ok",
        "status": "completed",
        "progress": 100,
        "current_step": 75,
        "total_steps": 75,
        "history": [
            {"step": 70, "epoch": 2, "training_loss": 9.0, "recorded_at": "2026-01-01T00:00:00Z"}
        ],
    }
    counts = stack.record_polls(late, [late_result])
    assert counts["ignored"] == 1
    after = stack.job(job_id)
    assert after == before
    assert stack.count(points, job_id) == points_before


def test_cycle_stops_before_its_time_budget(stack: Stack) -> None:
    """Polls still running when the budget ends are given up, their jobs left for the next
    cycle, without counting as failures."""
    jobs = [stack.queued_job() for _ in range(3)]
    stack.cycle()
    stack.sim.inject({"endpoint": "status", "kind": "latency", "seconds": 3.0})
    summary = stack.cycle(time_budget_seconds=4.0)
    assert summary.skipped == 3
    assert summary.ms < 3500
    for job_id in jobs:
        job = stack.job(job_id)
        assert job["status"] in {"initializing", "running"}
        assert job["attempts"] == 0
        assert job["lease_owner"] is None
    stack.sim._call("DELETE", "/_sim/faults")
    stack.run_until(lambda: all(stack.status(j) in TERMINAL for j in jobs))


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def test_an_unexpected_error_in_one_job_leaves_it_for_the_next_cycle(stack: Stack) -> None:
    """A bug hit while handling one job (here, storage raising something unforeseen) is logged,
    that job is left for the next cycle without counting an attempt, and the others go on."""
    broken_path = stack.upload("lora-datasets")
    broken = stack.queued_job(path=broken_path)
    healthy = stack.queued_job()
    real_storage = stack.storage

    class BrokenForOnePath:
        def signed_url(self, bucket: str | None, path: str, expires_in: int = 86400) -> str:
            if path == broken_path:
                raise RuntimeError("unforeseen")
            return real_storage.signed_url(bucket, path, expires_in)

        def upload_targets(self, user_id: uuid.UUID | str, job_id: uuid.UUID | str) -> Any:
            return real_storage.upload_targets(user_id, job_id)

    stack.storage = BrokenForOnePath()  # type: ignore[assignment]
    summary = stack.cycle()
    assert (summary.claimed, summary.submitted, summary.skipped) == (2, 1, 1)
    assert stack.job(healthy)["external_job_id"]
    job = stack.job(broken)
    assert (job["status"], job["attempts"], job["lease_owner"]) == ("initializing", 0, None)

    stack.storage = real_storage
    stack.run_until(lambda: all(stack.status(j) in TERMINAL for j in (broken, healthy)))
    assert stack.status(broken) is JobStatus.COMPLETED
