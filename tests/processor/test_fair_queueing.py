"""Many users, few GPUs: per-user limits, a capacity per GPU type and round-robin claiming, held
by overlapping processors."""

from __future__ import annotations

import threading
import time
import uuid

from shared.models import JobStatus
from tests.factories import make_user
from tests.processor.conftest import Stack

TERMINAL = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}

# Records, after every statement that changes jobs, the most active jobs any user and any GPU
# type has: the limits must hold at every moment, not only between cycles.
_WATCH_LIMITS = """
create table public.test_active_peaks (
  at timestamptz not null default clock_timestamp(),
  user_id uuid,
  gpu_type text,
  active integer not null
);
create function public.test_record_active_peaks() returns trigger language plpgsql as $$
begin
  insert into public.test_active_peaks (user_id, active)
  select user_id, count(*) from public.training_jobs
  where status in ('initializing', 'running') group by user_id;
  insert into public.test_active_peaks (gpu_type, active)
  select gpu_config ->> 'gpu_type', count(*) from public.training_jobs
  where status in ('initializing', 'running') group by 1;
  return null;
end $$;
create trigger test_record_active_peaks after update of status on public.training_jobs
  for each statement execute function public.test_record_active_peaks();
"""


def _active(stack: Stack, user_id: uuid.UUID) -> int:
    return stack.count(
        "select count(*) from training_jobs where user_id = %s"
        " and status in ('initializing', 'running')",
        user_id,
    )


def test_four_processors_keep_every_limit_and_serve_every_user_in_turn(stack: Stack) -> None:
    """User A queues 500 jobs and users B-E 5 each, with 20 A100s: across 4 overlapping
    processors no user ever exceeds their limit and the GPU type never its capacity (checked
    after every change in the database), B-E's first jobs start in the first cycle, and every
    job ends."""
    stack.sim.configure(steps_per_second=400, init_seconds=0)
    stack.admin.execute("update gpu_prices set max_active_jobs = 20 where gpu_type = 'A100'")
    stack.admin.execute(_WATCH_LIMITS)
    path = stack.upload("lora-datasets")
    heavy = make_user(stack.admin)
    light = [make_user(stack.admin) for _ in range(4)]
    stack.admin.execute(
        "insert into user_job_limits (user_id, max_active_jobs, plan) values (%s, 16, 'pro')",
        (heavy,),
    )
    for _ in range(500):
        stack.queued_job(user_id=heavy, path=path)
    first_jobs = {}
    for user_id in light:
        jobs = [stack.queued_job(user_id=user_id, path=path) for _ in range(5)]
        first_jobs[user_id] = jobs[0]
    limits = {"max_active_jobs_per_user": 3, "claim_batch_size": 25}

    first = stack.cycle(**limits)
    assert first.claimed == 20, first
    for user_id, job_id in first_jobs.items():
        assert stack.status(job_id) is not JobStatus.QUEUED, user_id
        assert _active(stack, user_id) == 3
    # 20 A100s: the light users' 12 first, then what is left for the heavy one.
    assert _active(stack, heavy) == 8

    errors: list[BaseException] = []
    done = threading.Event()

    def all_ended() -> bool:
        return (
            stack.count(
                "select count(*) from training_jobs where status not in"
                " ('completed', 'failed', 'cancelled')"
            )
            == 0
        )

    deadline = time.monotonic() + 240

    def worker() -> None:
        try:
            while not done.is_set() and time.monotonic() < deadline:
                stack.cycle(**limits)
                if all_ended():
                    done.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
            done.set()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert all_ended(), stack.admin.execute(
        "select status, count(*), min(error_message) from training_jobs group by 1"
    ).fetchall()
    assert stack.count("select count(*) from training_jobs where status = 'completed'") == 520

    peaks = dict(
        stack.admin.execute(
            "select coalesce(user_id::text, gpu_type), max(active) from test_active_peaks"
            " group by 1"
        ).fetchall()
    )
    assert peaks[str(heavy)] == 16
    assert all(peaks[str(user_id)] <= 3 for user_id in light)
    assert peaks["A100"] == 20
    assert max(peaks.values()) <= 20


def test_a_full_gpu_type_does_not_hold_up_other_types(stack: Stack) -> None:
    """With every A100 busy, a user's L4 job is still claimed, and the queued A100 job waits."""
    stack.sim.configure(steps_per_second=0.001, init_seconds=0)
    stack.admin.execute("update gpu_prices set max_active_jobs = 1 where gpu_type = 'A100'")
    user_id = make_user(stack.admin)
    busy = stack.queued_job(user_id=user_id)
    waiting = stack.queued_job(user_id=user_id)
    other = stack.queued_job(user_id=user_id, gpu_config={"gpu_type": "L4", "gpu_count": 1})
    summary = stack.cycle(max_active_jobs_per_user=2)
    assert summary.claimed == 2
    assert stack.status(busy) is not JobStatus.QUEUED
    assert stack.status(waiting) is JobStatus.QUEUED
    assert stack.status(other) is not JobStatus.QUEUED


def test_a_users_own_limit_overrides_the_default(stack: Stack) -> None:
    """A user with a limit of their own gets exactly that many active jobs; one with 0 gets
    none, whatever the default."""
    stack.sim.configure(steps_per_second=0.001, init_seconds=0)
    pro, paused = make_user(stack.admin), make_user(stack.admin)
    stack.admin.execute(
        "insert into user_job_limits (user_id, max_active_jobs) values (%s, 4), (%s, 0)",
        (pro, paused),
    )
    for _ in range(6):
        stack.queued_job(user_id=pro)
        stack.queued_job(user_id=paused)
    stack.cycle(max_active_jobs_per_user=2)
    stack.cycle(max_active_jobs_per_user=2)
    assert _active(stack, pro) == 4
    assert _active(stack, paused) == 0
