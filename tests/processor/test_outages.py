"""What real GPUs behind the processor demand: outages that fail nothing, runs stopped when a job
is given up, one bad row that spoils nothing else, no unpriced runs, billing by the run's own
clock, every point kept, and cancels that arrive too late told truthfully."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

from shared.models import JobStatus
from tests.factories import make_user
from tests.processor.conftest import Stack

TERMINAL = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
STEPS = 75  # the demo dataset: 200 pairs, batch 8, 3 epochs


def _clear_faults(stack: Stack) -> None:
    stack.sim._call("DELETE", "/_sim/faults")


def _steps(stack: Stack, job_id: uuid.UUID) -> list[int]:
    row = stack.admin.execute(
        "select coalesce(array_agg(step order by step), '{}') from metrics_points"
        " where job_id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    return list(row[0])


def _wait_for_sim(stack: Stack, external_job_id: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while stack.sim.job(external_job_id)["status"] != status:
        assert time.monotonic() < deadline, stack.sim.job(external_job_id)
        time.sleep(0.05)


def _run_seconds(stack: Stack, external_job_id: str) -> float:
    """The run's length by the cluster's own clock, as its status reports it."""

    async def report() -> Any:
        async with stack.cluster() as cluster:
            return await cluster.status(external_job_id)

    status = asyncio.run(report())
    assert status.started_at is not None
    assert status.ended_at is not None
    return float((status.ended_at - status.started_at).total_seconds())


def _billed_seconds(stack: Stack, job_id: uuid.UUID) -> float:
    row = stack.admin.execute(
        "select extract(epoch from run_ended_at - run_started_at)::float8 from training_jobs"
        " where id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    return float(row[0])


def test_a_long_cluster_outage_fails_nothing_and_every_job_completes(stack: Stack) -> None:
    """50 running jobs through a 10-minute outage of status calls and many failed polls: none
    fails, each shows since when contact was lost and its owner is told once; once the cluster
    answers again every job completes with all its points, and contact shows restored."""
    stack.sim.configure(steps_per_second=15, init_seconds=0)
    user = make_user(stack.admin)
    jobs = [stack.queued_job(user_id=user) for _ in range(50)]
    assert stack.cycle(claim_batch_size=50).submitted == 50
    stack.cycle()

    stack.sim.inject({"endpoint": "status", "kind": "http_error", "status": 503})
    for cycle in range(8):
        summary = stack.cycle(max_attempts=3)
        assert summary.lost_contact == 50, summary
        assert summary.failed == 0, summary
        if cycle == 0:
            # Ten minutes into the outage, by the jobs' clock.
            stack.admin.execute(
                "update training_jobs set lost_contact_since = now() - interval '10 minutes'"
            )
    for job_id in jobs:
        job = stack.job(job_id)
        assert job["status"] in {"initializing", "running"}, job["error_message"]
        assert job["lost_contact_since"] is not None
    assert (
        stack.count(
            "select count(*) from notifications where type = 'training_lost_contact'"
            " and user_id = %s",
            user,
        )
        == 50
    )

    _clear_faults(stack)
    stack.run_until(lambda: all(stack.status(j) in TERMINAL for j in jobs), pause=0.2)
    for job_id in jobs:
        job = stack.job(job_id)
        assert job["status"] == "completed", job["error_message"]
        assert job["lost_contact_since"] is None
        assert _steps(stack, job_id) == list(range(1, STEPS + 1))


def test_giving_up_on_a_job_stops_its_run_at_the_cluster(stack: Stack) -> None:
    """A job given up after its outage limit fails saying why, and its cancel is delivered, once
    the cluster takes it, until the cluster has stopped the run."""
    stack.sim.configure(steps_per_second=2, init_seconds=0)
    job_id = stack.queued_job()
    stack.cycle()
    stack.cycle()
    external_job_id = stack.job(job_id)["external_job_id"]

    stack.sim.inject({"endpoint": "*", "kind": "http_error", "status": 503})
    summary = stack.cycle(lost_contact_fail_seconds=0)
    job = stack.job(job_id)
    assert job["status"] == "failed"
    assert job["error_message"].startswith("Lost contact with the GPU cluster for")
    assert "asked to stop its run" in job["error_message"]
    assert job["cancel_requested_at"] is not None
    assert job["cancel_delivered_at"] is None
    assert summary.failed == 1
    stack.cycle(lost_contact_fail_seconds=0)
    assert stack.job(job_id)["cancel_delivered_at"] is None

    _clear_faults(stack)
    stack.cycle(lost_contact_fail_seconds=0)
    assert stack.job(job_id)["cancel_delivered_at"] is not None
    sim_job = stack.sim.job(external_job_id)
    assert sim_job["status"] == "cancelled"
    assert sim_job["cancel_requests"] >= 1


def test_one_poisoned_row_leaves_the_rest_of_its_batch_recorded(stack: Stack) -> None:
    """A batch of 50 polls where the database refuses one job's points: the other 49 are recorded
    and complete, and the refused job alone fails with the database's reason."""
    stack.sim.configure(steps_per_second=40, init_seconds=0)
    user = make_user(stack.admin)
    jobs = [stack.queued_job(user_id=user) for _ in range(50)]
    poisoned = jobs[17]
    stack.admin.execute(
        """
        create table public.test_poisoned (job_id uuid primary key);
        create function public.test_poison() returns trigger language plpgsql as $$
        begin
          if exists (select 1 from public.test_poisoned p where p.job_id = new.job_id) then
            raise exception 'poisoned row' using errcode = '22023';
          end if;
          return new;
        end $$;
        create trigger test_poison before insert on public.metrics_points
          for each row execute function public.test_poison();
        """
    )
    stack.admin.execute("insert into public.test_poisoned values (%s)", (poisoned,))
    assert stack.cycle(claim_batch_size=50).submitted == 50
    time.sleep(STEPS / 40 + 0.5)
    summary = stack.cycle()
    assert summary.unrecorded == 1, summary
    healthy = [j for j in jobs if j != poisoned]
    for job_id in healthy:
        job = stack.job(job_id)
        assert job["status"] == "completed", job["error_message"]
        assert job["lease_owner"] is None
        assert _steps(stack, job_id) == list(range(1, STEPS + 1))
    job = stack.job(poisoned)
    assert job["status"] == "failed"
    assert "22023" in job["error_message"]
    assert "poisoned row" in job["error_message"]
    assert _steps(stack, poisoned) == []


def test_a_statement_refused_for_every_row_fails_no_job(stack: Stack) -> None:
    """When the database refuses every row of a batch (a broken function, not bad rows), no job
    is failed for it: the cycle spends a bounded number of calls finding that out, releases
    every job, and they all complete once the database takes them again."""
    stack.sim.configure(steps_per_second=40, init_seconds=0)
    user = make_user(stack.admin)
    jobs = [stack.queued_job(user_id=user) for _ in range(20)]
    assert stack.cycle(claim_batch_size=20).submitted == 20
    time.sleep(STEPS / 40 + 0.5)
    stack.admin.execute(
        """
        create function public.test_refuse_all() returns trigger language plpgsql as $$
        begin
          raise exception 'refused' using errcode = '22023';
        end $$;
        create trigger test_refuse_all before insert on public.metrics_points
          for each row execute function public.test_refuse_all();
        """
    )
    summary = stack.cycle()
    assert summary.unrecorded == 20, summary
    assert summary.failed == 0
    # Claim queued, claim polls, the batch's record and its halves within their budget of
    # 4 x (20).bit_length() calls, the release, the pending cancels: the calls grow with the
    # logarithm of the batch, not with its size.
    assert summary.statements <= 1 + 1 + 1 + 4 * (20).bit_length() + 1 + 1, summary
    for job_id in jobs:
        job = stack.job(job_id)
        assert job["status"] in {"initializing", "running"}, job["error_message"]
        assert job["lease_owner"] is None
    stack.admin.execute("drop trigger test_refuse_all on public.metrics_points")
    stack.run_until(lambda: all(stack.status(j) is JobStatus.COMPLETED for j in jobs))
    for job_id in jobs:
        assert _steps(stack, job_id) == list(range(1, STEPS + 1))


def test_an_unpriced_gpu_job_is_refused_before_submission(stack: Stack) -> None:
    """A job on a GPU type without a price fails at once, naming the type, and nothing is sent
    to the cluster."""
    job_id = stack.queued_job(gpu_config={"gpu_type": "B300", "gpu_count": 1})
    summary = stack.cycle()
    assert summary.failed == 1
    job = stack.job(job_id)
    assert job["status"] == "failed"
    assert "'B300'" in job["error_message"]
    assert "no price" in job["error_message"]
    assert job["cancel_requested_at"] is None
    assert stack.sim.requests()["submit"] == 0
    assert stack.count("select count(*) from cost_records where job_id = %s", job_id) == 1
    assert Decimal(str(job["final_cost"])) == 0


def test_billing_follows_the_runs_own_clock_under_crashes(stack: Stack) -> None:
    """Cycles that crash after claiming their polls (their leases expire before anyone looks
    again) do not change what a run is billed: within one poll interval of its time at the
    cluster, and the cost record says the same."""
    poll_interval = 0.5
    stack.sim.configure(steps_per_second=15, init_seconds=0.3)
    jobs = [stack.queued_job() for _ in range(4)]
    stack.cycle(poll_interval_seconds=poll_interval)
    for _ in range(200):
        if all(stack.status(j) in TERMINAL for j in jobs):
            break
        # A cycle that claims every due job and dies; its leases expire two seconds later.
        stack.claim_polls(uuid.uuid4())
        time.sleep(2)
        stack.admin.execute(
            "update training_jobs set lease_expires_at = now() - interval '1 second'"
            " where lease_expires_at is not null"
        )
        stack.cycle(poll_interval_seconds=poll_interval)
    for job_id in jobs:
        job = stack.job(job_id)
        assert job["status"] == "completed", job["error_message"]
        run_seconds = _run_seconds(stack, job["external_job_id"])
        assert abs(_billed_seconds(stack, job_id) - run_seconds) <= poll_interval
        [(amount, details)] = stack.admin.execute(
            "select amount, details from cost_records where job_id = %s", (job_id,)
        ).fetchall()
        assert abs(details["duration_seconds"] - run_seconds) <= max(poll_interval, 1)
        assert amount == Decimal(str(job["final_cost"]))
        [(rate,)] = stack.admin.execute(
            "select hourly_rate from gpu_prices where gpu_type = 'A100'"
        ).fetchall()
        # One GPU for the run's own time; 0.0001 is the amount's rounding.
        expected = rate * Decimal(str(run_seconds)) / 3600
        assert abs(amount - expected) <= Decimal("0.0001")


def test_a_run_that_starts_and_ends_between_two_polls_is_billed(stack: Stack) -> None:
    """A run the processor only sees once it has completed is billed its own run time, not 0."""
    stack.sim.configure(steps_per_second=60, init_seconds=0)
    job_id = stack.queued_job()
    stack.cycle()
    external_job_id = stack.job(job_id)["external_job_id"]
    _wait_for_sim(stack, external_job_id, "completed")
    stack.cycle()
    job = stack.job(job_id)
    assert job["status"] == "completed"
    run_seconds = _run_seconds(stack, external_job_id)
    assert run_seconds > 1
    assert abs(_billed_seconds(stack, job_id) - run_seconds) < 0.01
    assert Decimal(str(job["final_cost"])) > 0


def test_a_job_given_up_whose_run_completed_anyway_keeps_every_point_and_says_so(
    stack: Stack,
) -> None:
    """A job failed after its outage, whose run went on to complete, gets all of the run's
    points, its adapter's location, its run's own billing, and a message that says exactly
    what happened, once the cluster answers again."""
    stack.sim.configure(steps_per_second=30, init_seconds=0)
    job_id = stack.queued_job()
    stack.cycle()
    stack.cycle()
    external_job_id = stack.job(job_id)["external_job_id"]
    stack.sim.inject({"endpoint": "*", "kind": "refuse"})
    stack.cycle(lost_contact_fail_seconds=0)
    job = stack.job(job_id)
    assert job["status"] == "failed"
    _wait_for_sim(stack, external_job_id, "completed")

    _clear_faults(stack)
    stack.run_until(lambda: stack.job(job_id)["run_settled_at"] is not None, max_cycles=5)
    job = stack.job(job_id)
    assert job["status"] == "failed"
    assert "The run had in fact completed at the GPU cluster" in job["error_message"]
    assert job["artifact_location"]
    assert _steps(stack, job_id) == list(range(1, STEPS + 1))
    run_seconds = _run_seconds(stack, external_job_id)
    assert abs(_billed_seconds(stack, job_id) - run_seconds) < 0.01
    [amount] = stack.admin.execute(
        "select amount from cost_records where job_id = %s", (job_id,)
    ).fetchone() or [None]
    assert amount == Decimal(str(job["final_cost"]))


def test_a_cancel_that_reaches_a_finished_run_ends_truthfully(stack: Stack) -> None:
    """Cancelled by its owner after its run had completed at the cluster: the job says the run
    had completed before the cancel reached it, keeps the adapter's location and every point,
    and is billed for the run, not up to the cancel."""
    stack.sim.configure(steps_per_second=60, init_seconds=0)
    job_id = stack.queued_job()
    stack.cycle()
    external_job_id = stack.job(job_id)["external_job_id"]
    _wait_for_sim(stack, external_job_id, "completed")
    time.sleep(1)
    stack.admin.execute("update training_jobs set status = 'cancelled' where id = %s", (job_id,))

    stack.run_until(lambda: stack.job(job_id)["run_settled_at"] is not None, max_cycles=5)
    job = stack.job(job_id)
    assert job["status"] == "cancelled"
    assert "The run had in fact completed at the GPU cluster" in job["error_message"]
    assert "before the cancel reached it" in job["error_message"]
    assert job["artifact_location"]
    assert _steps(stack, job_id) == list(range(1, STEPS + 1))
    run_seconds = _run_seconds(stack, external_job_id)
    assert abs(_billed_seconds(stack, job_id) - run_seconds) < 0.01
    types = {
        row[0]
        for row in stack.admin.execute(
            "select type from notifications where job_id = %s", (job_id,)
        )
    }
    assert {"training_cancelled", "training_run_completed"} <= types


def test_what_the_cluster_says_about_a_waiting_run_is_shown_until_it_ends(stack: Stack) -> None:
    """A poll's status message (why the run waits) is kept on the job, replaced by the next
    poll, and cleared when the job ends."""
    job_id = stack.queued_job()
    stack.cycle()
    owner = uuid.uuid4()
    [claimed] = stack.claim_polls(owner)
    waiting = "Waiting for 1 H100 at the cluster: none is free, or the cluster has none."
    report = {"job_id": claimed["job_id"], "outcome": "ok", "status": "queued", "progress": 0}
    stack.record_polls(owner, [{**report, "status_message": waiting}])
    assert stack.job(job_id)["status_message"] == waiting
    [claimed] = stack.claim_polls(owner)
    stack.record_polls(
        owner, [{**report, "status": "failed", "error": {"code": "x", "message": "y"}}]
    )
    job = stack.job(job_id)
    assert job["status"] == "failed"
    assert job["status_message"] is None
