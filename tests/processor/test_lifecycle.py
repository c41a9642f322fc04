"""A job's whole life through the processor: submission, polling, metrics, cost, notifications."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlparse

import pytest

from shared.models import JobStatus
from tests.processor.conftest import Stack

TERMINAL = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


def test_job_goes_from_queued_to_completed(stack: Stack) -> None:
    """queued -> initializing (with an external id) -> running -> completed, with every history
    point stored once, progress 100, a final cost, one cost record and each notification once."""
    stack.sim.configure(init_seconds=0.5)
    job_id = stack.queued_job(gpu_config={"gpu_type": "A100", "gpu_count": 2})

    first = stack.cycle()
    assert (first.claimed, first.submitted) == (1, 1)
    job = stack.job(job_id)
    assert job["status"] == "initializing"
    assert job["external_job_id"]
    assert job["idempotency_key"]

    stack.run_until(lambda: stack.status(job_id) in TERMINAL)
    job = stack.job(job_id)
    assert job["status"] == "completed", job["error_message"]
    assert Decimal(str(job["progress"])) == 100
    sim_job = stack.sim.job(job["external_job_id"])
    assert job["current_step"] == job["total_steps"] == sim_job["total_steps"] == 75
    assert job["started_at"]
    assert job["completed_at"]
    assert job["artifact_location"]
    assert job["current_metrics"]["step"] == 75
    assert job["lease_owner"] is None

    steps = stack.admin.execute(
        "select array_agg(step order by step) from metrics_points where job_id = %s", (job_id,)
    ).fetchone()
    assert steps is not None
    assert steps[0] == list(range(1, 76))

    final_cost = Decimal(str(job["final_cost"]))
    assert final_cost >= 0
    costs = stack.admin.execute(
        "select amount, cost_type from cost_records where job_id = %s", (job_id,)
    ).fetchall()
    assert costs == [(final_cost, "training_compute")]
    types = [
        row[0]
        for row in stack.admin.execute(
            "select type from notifications where job_id = %s order by created_at", (job_id,)
        )
    ]
    assert sorted(t for t in types if t != "training_progress") == [
        "training_completed",
        "training_started",
    ]


def test_progress_milestones_are_notified_once_each(stack: Stack) -> None:
    """A job watched through its run gets the 25, 50 and 75 % notices exactly once each."""
    stack.sim.configure(steps_per_second=25)
    job_id = stack.queued_job()
    stack.run_until(lambda: stack.status(job_id) in TERMINAL, max_cycles=200, pause=0.1)
    assert stack.status(job_id) is JobStatus.COMPLETED
    milestones = [
        row[0]
        for row in stack.admin.execute(
            "select metadata->>'progress' from notifications"
            " where job_id = %s and type = 'training_progress' order by created_at",
            (job_id,),
        )
    ]
    assert milestones == ["25", "50", "75"]


def test_running_cost_and_estimates_are_kept_while_training(stack: Stack) -> None:
    """While running, the job carries a running cost, an estimated total and an ETA."""
    stack.sim.configure(steps_per_second=10)
    job_id = stack.queued_job(gpu_config={"gpu_type": "H100", "gpu_count": 8})
    stack.run_until(
        lambda: stack.status(job_id) is JobStatus.RUNNING and stack.job(job_id)["progress"] > 0,
        pause=0.3,
    )
    stack.cycle()
    job = stack.job(job_id)
    assert job["status"] == "running"
    assert Decimal(str(job["current_cost"])) > 0
    assert Decimal(str(job["estimated_total_cost"])) >= Decimal(str(job["current_cost"]))
    assert job["estimated_completion_at"] is not None


@pytest.mark.parametrize("bucket", ["training-files", "lora-datasets", None])
def test_dataset_url_is_signed_from_the_right_bucket(stack: Stack, bucket: str | None) -> None:
    """training-files, lora-datasets and a NULL bucket (meaning lora-datasets) each get a URL
    signed for that bucket, which the simulator downloads and trains on."""
    job_id = stack.queued_job(bucket=bucket)
    stack.run_until(lambda: stack.status(job_id) in TERMINAL)
    assert stack.status(job_id) is JobStatus.COMPLETED
    [(_, path, url)] = stack.storage.signed
    expected = bucket or "lora-datasets"
    assert urlparse(url).path == f"/{expected}/{path}"
    assert "X-Amz-Expires=86400" in url


def test_unknown_bucket_fails_the_job_with_a_message(stack: Stack) -> None:
    """A dataset in a bucket the runner does not know fails its job, naming the bucket."""
    job_id = stack.queued_job(bucket="someone-elses-bucket", path="a/train.jsonl")
    summary = stack.cycle()
    assert summary.failed == 1
    job = stack.job(job_id)
    assert job["status"] == "failed"
    assert "someone-elses-bucket" in job["error_message"]
    assert job["external_job_id"] is None
    assert stack.sim.requests()["submit"] == 0


def test_missing_dataset_file_fails_the_job_with_a_message(stack: Stack) -> None:
    """A dataset whose file is not in its bucket fails its job with a message naming the file."""
    job_id = stack.queued_job(bucket="training-files", path="nowhere/missing.jsonl")
    stack.cycle()
    job = stack.job(job_id)
    assert job["status"] == "failed"
    assert "nowhere/missing.jsonl" in job["error_message"]
