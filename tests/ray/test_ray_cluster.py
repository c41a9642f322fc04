"""The Ray adapter against a real Ray head: submissions, states, the history, cancels, failures."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import httpx
import pytest

from shared.cluster import ClusterJobState, RayJobsCluster
from shared.errors import ClusterBadResponse, ClusterRejected, ClusterUnavailable
from shared.training_events import ArtifactTargets, TrainerSpec
from tests.cluster.support import RecordingSleep
from tests.ray.conftest import (
    START_TIMEOUT_SECONDS,
    TAIL_LINES,
    TOKEN,
    RequestLog,
    ended,
    run_request,
    wait_for,
)

pytestmark = pytest.mark.anyio


# --- submitting ----------------------------------------------------------------------------------


async def test_same_key_submitted_twice_starts_one_run(
    cluster: RayJobsCluster, ray_rest: httpx.AsyncClient
) -> None:
    """Submitting the same idempotency key twice, even at once, answers one run and starts one."""
    request = run_request(steps=3)
    first, second = await asyncio.gather(cluster.submit(request), cluster.submit(request))
    third = await cluster.submit(request)
    assert first.external_job_id == second.external_job_id == third.external_job_id
    jobs = [
        job
        for job in (await ray_rest.get("/api/jobs/")).json()
        if (job.get("metadata") or {}).get("job_id") == str(request.job_id)
    ]
    assert [job["submission_id"] for job in jobs] == [first.external_job_id]
    final = await wait_for(cluster, first.external_job_id, ended)
    assert final.status is ClusterJobState.COMPLETED
    # Submitting again after the run ended finds it, ended, and starts nothing.
    again = await cluster.submit(request)
    assert again.status is ClusterJobState.COMPLETED


async def test_key_reused_for_another_job_is_rejected(cluster: RayJobsCluster) -> None:
    """A key already used by another job's run is refused rather than answered with that run."""
    request = run_request(steps=1)
    await cluster.submit(request)
    other = request.model_copy(update={"job_id": run_request().job_id})
    with pytest.raises(ClusterRejected) as caught:
        await cluster.submit(other)
    assert caught.value.status_code == 409


async def test_job_carries_the_spec_and_asks_for_the_gpus(
    cluster: RayJobsCluster, ray_rest: httpx.AsyncClient
) -> None:
    """The job's entrypoint carries the trainer spec, and it asks for the GPU count and type."""
    request = run_request(steps=2).model_copy(
        update={
            "artifacts": ArtifactTargets(
                location="s3://bucket/user/job/",
                upload_urls={"adapter/adapter_model.safetensors": "https://up.invalid/a?sig=1"},
            )
        }
    )
    submitted = await cluster.submit(request)
    job = (await ray_rest.get(f"/api/jobs/{submitted.external_job_id}")).json()
    command, spec_arg = job["entrypoint"].split(" --spec ")
    assert command == "python -m tests.ray.fake_trainer"
    spec = TrainerSpec.model_validate_json(base64.urlsafe_b64decode(spec_arg))
    assert spec.job_id == str(request.job_id)
    assert spec.dataset_url == request.dataset_url
    assert spec.hyperparameters == request.hyperparameters
    assert spec.artifacts == request.artifacts
    assert job["runtime_env"] == {"env_vars": {"PYTHONUNBUFFERED": "1"}}
    assert job["metadata"]["job_id"] == str(request.job_id)
    # The job's resources are those its supervisor actor asks Ray for.
    answer = await ray_rest.get(
        "/api/v0/actors",
        params={
            "detail": "true",
            "filter_keys": "name",
            "filter_predicates": "=",
            "filter_values": f"_ray_internal_job_actor_{submitted.external_job_id}",
        },
    )
    actors = answer.json()["data"]["result"]["result"]
    assert [actor["required_resources"] for actor in actors] == [
        {"GPU": 1.0, "accelerator_type:A100": 0.001}
    ]
    final = await wait_for(cluster, submitted.external_job_id, ended)
    assert final.artifact_uri == "s3://bucket/user/job/adapter/"


# --- states and the history ----------------------------------------------------------------------


async def test_states_follow_the_run(cluster: RayJobsCluster) -> None:
    """A run is queued, then initializing until the trainer starts, running, then completed."""
    submitted = await cluster.submit(run_request(steps=5, start_seconds=2.0, step_seconds=0.2))
    assert submitted.status is ClusterJobState.QUEUED
    seen: list[ClusterJobState] = []

    def record(status: Any) -> bool:
        if not seen or seen[-1] is not status.status:
            seen.append(status.status)
        return bool(status.status.is_terminal)

    final = await wait_for(cluster, submitted.external_job_id, record)
    assert seen[-3:] == [
        ClusterJobState.INITIALIZING,
        ClusterJobState.RUNNING,
        ClusterJobState.COMPLETED,
    ]
    assert set(seen) <= {ClusterJobState.QUEUED, *seen[-3:]}
    assert final.progress == 100
    assert (final.current_step, final.total_steps) == (5, 5)
    assert (final.current_epoch, final.total_epochs) == (0, 1)
    assert final.started_at is not None
    assert final.ended_at is not None
    assert final.started_at <= final.ended_at
    assert final.metrics is not None
    assert final.metrics.step == 5
    assert final.metrics.gpu_utilization is None  # no GPU to measure: never a made-up 0
    assert final.error is None


async def test_history_is_each_step_once_across_polls(cluster: RayJobsCluster) -> None:
    """Polling with the last step seen delivers every step event exactly once, in order, while
    the log outgrows the tail many times over."""
    steps = 60
    # Four lines a step: the log is ~5 tails long, and a poll falls behind by more than a tail.
    submitted = await cluster.submit(
        run_request(steps=steps, step_seconds=0.05, noise_lines=3, hold_seconds=0.5)
    )
    delivered: list[int] = []
    since = 0
    deadline = time.monotonic() + 60
    while True:
        status = await cluster.status(submitted.external_job_id, since)
        delivered += [point.step for point in status.history]
        if status.history:
            since = status.history[-1].step
            assert status.metrics == status.history[-1]
        if status.status.is_terminal:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.3)
    assert status.status is ClusterJobState.COMPLETED
    assert delivered == list(range(1, steps + 1))


async def test_caught_up_poll_reads_one_tail(
    cluster: RayJobsCluster, requests_sent: RequestLog
) -> None:
    """A caught-up poll of a run whose log is longer than the tail reads the job's record, one
    tail and the start marker, never the whole log; one far behind reads more, once."""
    steps = 3 * TAIL_LINES
    submitted = await cluster.submit(run_request(steps=steps, hold_seconds=30))
    job = submitted.external_job_id
    try:
        await wait_for(cluster, job, lambda s: s.current_step == steps, since_step=steps)
        requests_sent.paths.clear()
        status = await cluster.status(job, since_step=steps)
        assert status.status is ClusterJobState.RUNNING
        assert status.history == []
        assert (status.current_step, status.total_steps, status.progress) == (steps, steps, 100)
        assert status.started_at is not None
        assert requests_sent.paths == [
            f"/api/jobs/{job}",
            "/api/v0/logs/file",
            f"/api/jobs/{job}.started",
        ]
        # Behind by less than a longer tail's reach: a second, longer tail.
        requests_sent.paths.clear()
        behind = steps - 2 * TAIL_LINES
        status = await cluster.status(job, since_step=behind)
        assert [p.step for p in status.history] == list(range(behind + 1, steps + 1))
        assert f"/api/jobs/{job}/logs" not in requests_sent.paths
        assert requests_sent.paths.count("/api/v0/logs/file") == 2
        # From the start: every step, with at most one read of the whole log.
        requests_sent.paths.clear()
        status = await cluster.status(job, since_step=0)
        assert [p.step for p in status.history] == list(range(1, steps + 1))
        assert requests_sent.paths.count(f"/api/jobs/{job}/logs") <= 1
    finally:
        await cluster.cancel(job)


async def test_failed_run_reports_the_trainers_error(cluster: RayJobsCluster) -> None:
    """A run whose trainer printed a failed event fails with that event's code and message."""
    submitted = await cluster.submit(run_request(steps=3, ending="failed"))
    final = await wait_for(cluster, submitted.external_job_id, ended)
    assert final.status is ClusterJobState.FAILED
    assert final.error is not None
    assert (final.error.code, final.error.message) == ("non_finite_loss", "loss is NaN")
    assert final.current_step == 3
    assert final.ended_at is not None


async def test_exit_without_completion_is_a_failure(cluster: RayJobsCluster) -> None:
    """A trainer that exits 0 without printing completed has not produced a result: failed."""
    submitted = await cluster.submit(run_request(steps=2, ending="silent"))
    final = await wait_for(cluster, submitted.external_job_id, ended)
    assert final.status is ClusterJobState.FAILED
    assert final.error is not None
    assert final.error.code == "no_result"


async def test_crash_reports_rays_message(cluster: RayJobsCluster) -> None:
    """A trainer that crashes without a failed event fails with Ray's error type and message."""
    submitted = await cluster.submit(run_request(steps=2, ending="crash"))
    final = await wait_for(cluster, submitted.external_job_id, ended)
    assert final.status is ClusterJobState.FAILED
    assert final.error is not None
    assert final.error.code == "job_entrypoint_command_error"
    assert "exit code 3" in final.error.message
    assert final.ended_at is not None


async def test_off_schema_event_is_a_bad_response(cluster: RayJobsCluster) -> None:
    """An event line that does not follow the schema makes the report a bad response."""
    submitted = await cluster.submit(run_request(steps=2, ending="bad_event"))

    async def poll_until_the_line_is_written() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await cluster.status(submitted.external_job_id)
            await asyncio.sleep(0.25)

    with pytest.raises(ClusterBadResponse, match="off the schema"):
        await poll_until_the_line_is_written()


# --- cancelling ----------------------------------------------------------------------------------


async def test_cancel_while_running(cluster: RayJobsCluster) -> None:
    """Cancelling a running run stops it: cancelled, with the steps it made, and idempotent."""
    submitted = await cluster.submit(run_request(steps=200, step_seconds=0.1))
    job = submitted.external_job_id
    await wait_for(cluster, job, lambda s: s.current_step >= 3)
    answer = await cluster.cancel(job)
    assert answer.status is ClusterJobState.CANCELLED
    assert answer.external_job_id == job
    final = await wait_for(cluster, job, ended)
    assert final.status is ClusterJobState.CANCELLED
    assert 3 <= final.current_step < 200
    assert final.ended_at is not None
    assert final.started_at is not None
    assert (await cluster.cancel(job)).status is ClusterJobState.CANCELLED


async def test_cancel_after_completion_answers_completed(cluster: RayJobsCluster) -> None:
    """A cancel that arrives after the run completed leaves it completed and says so."""
    submitted = await cluster.submit(run_request(steps=2))
    await wait_for(cluster, submitted.external_job_id, ended)
    answer = await cluster.cancel(submitted.external_job_id)
    assert answer.status is ClusterJobState.COMPLETED
    final = await cluster.status(submitted.external_job_id)
    assert final.status is ClusterJobState.COMPLETED


async def test_cancel_while_waiting_for_resources_ends_it(
    cluster: RayJobsCluster, ray_rest: httpx.AsyncClient
) -> None:
    """A run waiting for a GPU type the cluster lacks is queued and says what it waits for;
    cancelling it reports cancelled from then on, and Ray ends the job without ever running it."""
    submitted = await cluster.submit(run_request(gpu_type="H100", steps=2))
    job = submitted.external_job_id
    await asyncio.sleep(1.0)
    waiting = await cluster.status(job)
    assert waiting.status is ClusterJobState.QUEUED
    assert waiting.status_message is not None
    assert waiting.status_message.startswith("Waiting for 1 H100 at the cluster")
    answer = await cluster.cancel(job)
    assert answer.status is ClusterJobState.CANCELLED
    cancelled = await cluster.status(job)
    assert cancelled.status is ClusterJobState.CANCELLED
    assert cancelled.status_message is None
    assert cancelled.ended_at is not None
    assert cancelled.started_at is None
    assert (await cluster.cancel(job)).status is ClusterJobState.CANCELLED
    # Ray itself ends the job at its start timeout, and it stays cancelled for the processor.
    deadline = time.monotonic() + START_TIMEOUT_SECONDS + 30
    while (await ray_rest.get(f"/api/jobs/{job}")).json()["status"] == "PENDING":
        assert time.monotonic() < deadline, "Ray never ended the cancelled job"
        await asyncio.sleep(1.0)
    record = (await ray_rest.get(f"/api/jobs/{job}")).json()
    assert record["status"] == "FAILED"
    assert record["driver_node_id"] is None
    after = await cluster.status(job)
    assert after.status is ClusterJobState.CANCELLED
    assert after.ended_at == cancelled.ended_at


# --- failures ------------------------------------------------------------------------------------


async def test_unknown_id_is_rejected(cluster: RayJobsCluster) -> None:
    """Status and cancel of a run Ray does not know are rejected with 404."""
    for call in (cluster.status, cluster.cancel):
        with pytest.raises(ClusterRejected) as caught:
            await call("lora-no-such-run")
        assert caught.value.status_code == 404


async def test_unreachable_ray_is_transient() -> None:
    """A Ray head that cannot be reached is unavailable (worth retrying), after the retries."""
    sleeps = RecordingSleep()
    async with RayJobsCluster(
        "http://127.0.0.1:9", TOKEN, connect_timeout=0.5, max_attempts=3, sleep=sleeps
    ) as unreachable:
        with pytest.raises(ClusterUnavailable) as caught:
            await unreachable.status("lora-anything")
        assert not isinstance(caught.value, ClusterRejected)
        with pytest.raises(ClusterUnavailable):
            await unreachable.submit(run_request())
    assert len(sleeps.delays) == 4  # two retries per call


async def test_wrong_token_is_unavailable_not_rejected(ray_head: Any) -> None:
    """A token Ray refuses is the deployment's fault: unavailable, never a rejected run."""
    sleeps = RecordingSleep()
    async with RayJobsCluster(ray_head.dashboard_url, "wrong", sleep=sleeps) as wrong:
        with pytest.raises(ClusterUnavailable, match="GPU_CLUSTER_API_KEY"):
            await wrong.status("lora-anything")
    assert sleeps.delays == []
