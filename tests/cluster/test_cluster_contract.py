"""The REST client and the simulator agree on the contract: submit, watch and cancel a run."""

from __future__ import annotations

import asyncio
import json

import pytest

from shared.cluster import ClusterJobState, MetricsPoint, RestTrainingCluster
from shared.errors import ClusterRejected
from tests.cluster.support import (
    DatasetServer,
    SimulatorControl,
    training_request,
    wait_until_ended,
)

pytestmark = pytest.mark.anyio


async def test_submitted_run_completes_with_its_adapter(
    cluster: RestTrainingCluster, datasets: DatasetServer
) -> None:
    """A submitted run is queued, then completes with full progress, an artifact URI and the
    times it started and ended."""
    submitted = await cluster.submit(training_request(datasets.jsonl(40), epochs=2))

    assert submitted.status is ClusterJobState.QUEUED
    final = await wait_until_ended(cluster, submitted.external_job_id)
    assert final.status is ClusterJobState.COMPLETED
    assert final.progress == 100
    assert (final.current_epoch, final.total_epochs) == (2, 2)
    assert final.current_step == final.total_steps == 10
    assert final.error is None
    assert final.artifact_uri == f"s3://lora-artifacts/{submitted.external_job_id}/adapter"
    assert [point.step for point in final.history] == list(range(1, 11))
    assert final.metrics == final.history[-1]
    assert final.started_at is not None
    assert final.started_at < final.history[0].recorded_at
    assert final.ended_at == final.history[-1].recorded_at


@pytest.mark.parametrize(
    ("pairs", "hyperparameters", "total_steps"),
    [
        (40, {}, 15),  # defaults: batch 8, 3 epochs -> 5 steps an epoch
        (41, {"batch_size": 8, "epochs": 2}, 12),  # a partial batch is still a step
        (100, {"batch_size": 32, "epochs": 1}, 4),
    ],
)
async def test_total_steps_come_from_the_dataset(
    cluster: RestTrainingCluster,
    datasets: DatasetServer,
    pairs: int,
    hyperparameters: dict[str, int],
    total_steps: int,
) -> None:
    """Total steps are ceil(pairs / batch_size) * epochs, counted from the downloaded JSONL."""
    submitted = await cluster.submit(training_request(datasets.jsonl(pairs), **hyperparameters))

    final = await wait_until_ended(cluster, submitted.external_job_id)
    assert final.total_steps == total_steps


async def test_json_array_datasets_are_counted_too(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """A dataset stored as one JSON array counts one training pair per element."""
    url = datasets.publish(json.dumps([{"prompt": "q", "completion": "a"}] * 17).encode())

    submitted = await cluster.submit(training_request(url, epochs=1))

    final = await wait_until_ended(cluster, submitted.external_job_id)
    assert final.total_steps == 3
    assert sim.job(submitted.external_job_id)["training_pairs"] == 17


async def test_same_idempotency_key_is_one_run(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """Submitting the same idempotency key twice returns the same run and creates no second."""
    request = training_request(datasets.jsonl(16))

    first = await cluster.submit(request)
    second = await cluster.submit(request)

    assert second.external_job_id == first.external_job_id
    assert sim.submissions()[request.idempotency_key] == {
        "requests": 2,
        "jobs_created": 1,
        "external_job_id": first.external_job_id,
    }


async def test_concurrent_submissions_with_one_key_make_one_run(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """Racing submissions of one key, as overlapping processors would send, start one run."""
    request = training_request(datasets.jsonl(16))

    results = await asyncio.gather(*(cluster.submit(request) for _ in range(10)))

    assert len({result.external_job_id for result in results}) == 1
    assert sim.submissions()[request.idempotency_key]["requests"] == 10
    assert sim.submissions()[request.idempotency_key]["jobs_created"] == 1


async def test_since_step_returns_exactly_the_newer_points(
    cluster: RestTrainingCluster, datasets: DatasetServer
) -> None:
    """since_step=N returns the points after step N, the same ones on every poll."""
    submitted = await cluster.submit(training_request(datasets.jsonl(80), epochs=2))
    full = await wait_until_ended(cluster, submitted.external_job_id)

    again = await cluster.status(submitted.external_job_id)
    newer = await cluster.status(submitted.external_job_id, since_step=12)
    none_left = await cluster.status(submitted.external_job_id, since_step=full.current_step)

    assert again.history == full.history
    assert newer.history == full.history[12:]
    assert [point.step for point in newer.history] == list(range(13, 21))
    assert none_left.history == []
    assert none_left.metrics == full.metrics


async def test_polling_from_the_last_step_seen_loses_no_point(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """Polling while the run advances, each time since the last step seen, gathers every point."""
    sim.configure(steps_per_second=400)
    submitted = await cluster.submit(training_request(datasets.jsonl(400), epochs=2))

    gathered: list[MetricsPoint] = []
    polls = 0
    while True:
        status = await cluster.status(
            submitted.external_job_id, since_step=gathered[-1].step if gathered else 0
        )
        polls += 1
        gathered.extend(status.history)
        if status.status.is_terminal:
            break
        await asyncio.sleep(0.01)

    assert polls >= 3
    assert status.status is ClusterJobState.COMPLETED
    full = await cluster.status(submitted.external_job_id)
    assert gathered == full.history
    assert len(gathered) == full.total_steps == 100


async def test_run_is_running_between_start_and_end(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """A run reports running with partial progress and the epoch it is in while it trains."""
    sim.configure(steps_per_second=20)
    submitted = await cluster.submit(training_request(datasets.jsonl(800), epochs=1))
    await asyncio.sleep(0.3)

    status = await cluster.status(submitted.external_job_id)

    assert status.status is ClusterJobState.RUNNING
    assert status.total_steps == 100
    assert 0 < status.current_step < 100
    assert status.progress == pytest.approx(status.current_step)
    assert status.current_epoch == 1
    assert status.artifact_uri is None


async def test_run_initializes_before_it_runs(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """A run stays initializing, at step 0, until its initialization delay has passed."""
    sim.configure(init_seconds=30)
    submitted = await cluster.submit(training_request(datasets.jsonl(8)))
    await asyncio.sleep(0.1)

    status = await cluster.status(submitted.external_job_id)

    assert status.status is ClusterJobState.INITIALIZING
    assert (status.current_step, status.progress, status.history) == (0, 0, [])
    assert status.total_steps == 3


async def test_cancel_stops_a_run_and_is_idempotent(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """Cancelling stops a run where it is; cancelling again changes nothing and is counted."""
    sim.configure(steps_per_second=20)
    submitted = await cluster.submit(training_request(datasets.jsonl(800)))
    await asyncio.sleep(0.2)

    first = await cluster.cancel(submitted.external_job_id)
    stopped = await cluster.status(submitted.external_job_id)
    await asyncio.sleep(0.2)
    second = await cluster.cancel(submitted.external_job_id)
    later = await cluster.status(submitted.external_job_id)

    assert first.status is second.status is ClusterJobState.CANCELLED
    assert first.external_job_id == submitted.external_job_id
    assert stopped.status is ClusterJobState.CANCELLED
    assert stopped.ended_at is not None
    assert later == stopped
    assert stopped.current_step < (stopped.total_steps or 0)
    assert sim.job(submitted.external_job_id)["cancel_requests"] == 2


async def test_cancelling_a_finished_run_leaves_it_completed(
    cluster: RestTrainingCluster, datasets: DatasetServer
) -> None:
    """A cancel that arrives after the run completed answers completed and changes nothing."""
    submitted = await cluster.submit(training_request(datasets.jsonl(8)))
    completed = await wait_until_ended(cluster, submitted.external_job_id)

    answer = await cluster.cancel(submitted.external_job_id)

    assert answer.status is ClusterJobState.COMPLETED
    assert await cluster.status(submitted.external_job_id) == completed


async def test_unknown_run_is_rejected_as_not_found(
    cluster: RestTrainingCluster, sim: SimulatorControl
) -> None:
    """Status and cancel of a run the cluster does not know raise ClusterRejected 404, once."""
    with pytest.raises(ClusterRejected, match="no training job simjob-missing") as status_error:
        await cluster.status("simjob-missing")
    with pytest.raises(ClusterRejected) as cancel_error:
        await cluster.cancel("simjob-missing")

    assert status_error.value.status_code == cancel_error.value.status_code == 404
    assert sim.requests() == {"submit": 0, "status": 1, "cancel": 1}


async def test_invalid_hyperparameters_are_rejected(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """Hyperparameters the cluster cannot train with raise ClusterRejected 400 with its reason."""
    with pytest.raises(ClusterRejected, match="batch_size must be positive") as caught:
        await cluster.submit(training_request(datasets.jsonl(8), batch_size=0))

    assert (caught.value.status_code, caught.value.code) == (400, "invalid_hyperparameters")
    assert sim.requests()["submit"] == 1


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (404, "HTTP 404 Not Found"),
        (403, "HTTP 403 Forbidden (the signed URL may have expired)"),
        (500, "HTTP 500 Internal Server Error"),
    ],
)
async def test_dataset_download_failure_fails_the_run(
    cluster: RestTrainingCluster, datasets: DatasetServer, status: int, reason: str
) -> None:
    """A dataset URL that answers an error fails the run with dataset_unavailable and why."""
    submitted = await cluster.submit(training_request(datasets.publish(b"denied", status=status)))

    final = await wait_until_ended(cluster, submitted.external_job_id)

    assert final.status is ClusterJobState.FAILED
    assert final.error is not None
    assert final.error.code == "dataset_unavailable"
    assert final.error.message == f"downloading the dataset failed with {reason}"
    assert (final.total_steps, final.history) == (None, [])
    assert final.started_at is None
    assert final.ended_at is not None


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/unreachable.jsonl", "not a url", "ftp://example.org/d.jsonl"]
)
async def test_unreachable_or_invalid_dataset_url_fails_the_run(
    cluster: RestTrainingCluster, url: str
) -> None:
    """A dataset URL that cannot be fetched at all fails the run with dataset_unavailable."""
    submitted = await cluster.submit(training_request(url))

    final = await wait_until_ended(cluster, submitted.external_job_id)

    assert final.status is ClusterJobState.FAILED
    assert final.error is not None
    assert final.error.code == "dataset_unavailable"
    assert "dataset" in final.error.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the dataset holds no training pairs"),
        (b'{"prompt": "q"}\nnot json\n', "line 2 of the dataset is not JSON"),
    ],
)
async def test_unusable_dataset_fails_the_run(
    cluster: RestTrainingCluster, datasets: DatasetServer, body: bytes, message: str
) -> None:
    """A dataset that downloads but holds no readable pairs fails the run with dataset_invalid."""
    submitted = await cluster.submit(training_request(datasets.publish(body)))

    final = await wait_until_ended(cluster, submitted.external_job_id)

    assert final.error is not None
    assert final.error.code == "dataset_invalid"
    assert final.error.message.startswith(message)


async def test_run_failing_mid_way_reports_failed_with_its_error(
    cluster: RestTrainingCluster, datasets: DatasetServer, sim: SimulatorControl
) -> None:
    """A run made to fail at step N ends failed at step N-1, with its points and its error."""
    sim.configure(init_seconds=0.3)
    submitted = await cluster.submit(training_request(datasets.jsonl(80)))
    sim.fail_at_step(submitted.external_job_id, 7, "CUDA out of memory")

    final = await wait_until_ended(cluster, submitted.external_job_id)

    assert final.status is ClusterJobState.FAILED
    assert final.error is not None
    assert (final.error.code, final.error.message) == ("training_failed", "CUDA out of memory")
    assert final.current_step == 6
    assert [point.step for point in final.history] == list(range(1, 7))
    assert final.artifact_uri is None
    assert final.started_at is not None
    assert final.ended_at is not None
    assert final.ended_at > final.history[-1].recorded_at
