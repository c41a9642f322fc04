"""How the Ray adapter reads a job's log, against a stand-in for Ray's REST API (no Ray needed).

The stand-in serves one job's record and its log the way Ray 2.60 does: the last N lines
(``/api/v0/logs/file?lines=N``) and the whole log (``/api/jobs/{id}/logs``); it takes marker
jobs (``POST /api/jobs/``) and answers a taken submission id as Ray does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.cluster import ClusterJobState, RayJobsCluster
from shared.cluster.ray import submission_id_for
from shared.errors import ClusterBadResponse, ClusterUnavailable
from shared.training_events import (
    CancelledEvent,
    CompletedEvent,
    FailedEvent,
    StartedEvent,
    StepEvent,
    encode_event,
)
from tests.cluster.support import RecordingSleep

pytestmark = pytest.mark.anyio

JOB = "lora-job"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def started(total_steps: int = 10) -> str:
    return encode_event(
        StartedEvent(
            time=T0,
            total_steps=total_steps,
            total_epochs=2,
            base_model="m",
            trainable_parameters=1,
            training_examples=1,
            validation_examples=0,
        )
    )


def step(n: int, epoch: int = 0) -> str:
    return encode_event(
        StepEvent(
            time=T0 + timedelta(seconds=n),
            step=n,
            epoch=epoch,
            training_loss=1.0 / n,
            learning_rate=1e-4,
            tokens_per_second=100.0,
        )
    )


class FakeRay:
    """Ray's answers for one job: its record and its log; counts what was asked."""

    def __init__(self, log: str, status: str = "RUNNING", **record: Any) -> None:
        self.log = log
        self.record = {
            "submission_id": JOB,
            "status": status,
            "driver_node_id": "node-1",
            "start_time": 1_796_000_000_000,
            "end_time": None,
            "message": "",
            "error_type": None,
            "metadata": {},
            **record,
        }
        self.markers: dict[str, dict[str, Any]] = {}
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.asked.append(f"{request.method} {path}")
        if path == f"/api/jobs/{JOB}":
            return httpx.Response(200, json=self.record)
        if path == f"/api/jobs/{JOB}/logs":
            return httpx.Response(200, json={"logs": self.log})
        if path == "/api/jobs/" and request.method == "POST":
            body = json.loads(request.content)
            if body["submission_id"] in self.markers:
                return httpx.Response(500, text="ValueError: Job with ... already exists.")
            self.markers[body["submission_id"]] = {
                **self.record,
                "submission_id": body["submission_id"],
                "metadata": body["metadata"],
                "status": "SUCCEEDED",
            }
            return httpx.Response(200, json={"submission_id": body["submission_id"]})
        if path.startswith("/api/jobs/"):
            marker = self.markers.get(path.removeprefix("/api/jobs/"))
            if marker is not None:
                return httpx.Response(200, json=marker)
            return httpx.Response(404, text=f"Job {path} does not exist")
        if path == "/api/v0/logs/file":
            lines = int(request.url.params["lines"])
            kept = self.log.splitlines(keepends=True)[-lines:]
            return httpx.Response(200, text="".join(kept))
        return httpx.Response(404)


def adapter(fake: FakeRay, tail_lines: int = 10, **options: Any) -> RayJobsCluster:
    return RayJobsCluster(
        "http://ray.invalid",
        "key",
        tail_lines=tail_lines,
        transport=httpx.MockTransport(fake),
        sleep=RecordingSleep(),
        **options,
    )


def lines(*parts: str, end: str = "\n") -> str:
    return "\n".join(parts) + end


async def test_short_log_is_read_from_one_tail() -> None:
    """A log shorter than the tail is read whole from it: no second request for the log."""
    fake = FakeRay(lines("Running entrypoint ...", started(), step(1), step(2)))
    async with adapter(fake) as cluster:
        status = await cluster.status(JOB, since_step=1)
    assert [p.step for p in status.history] == [2]
    assert (status.status, status.current_step, status.progress) == (
        ClusterJobState.RUNNING,
        2,
        20.0,
    )
    assert fake.asked == [f"GET /api/jobs/{JOB}", "GET /api/v0/logs/file"]


async def test_unfinished_last_line_waits_for_the_next_poll() -> None:
    """While the job runs, a last line without its newline is left alone, even half an event."""
    half = step(3)[:40]
    fake = FakeRay(lines(started(), step(1), step(2)) + half)
    async with adapter(fake) as cluster:
        status = await cluster.status(JOB)
    assert [p.step for p in status.history] == [1, 2]


async def test_event_after_other_output_on_the_same_line_is_read() -> None:
    """An event printed right after a progress bar's unterminated output still counts."""
    fake = FakeRay(lines(started(), " 50%|#####     |\r" + step(1)))
    async with adapter(fake) as cluster:
        status = await cluster.status(JOB)
    assert [p.step for p in status.history] == [1]


async def test_start_beyond_the_tail_is_read_once_then_recorded() -> None:
    """When the tail lacks the start, the whole log is read once and the start recorded in a
    marker job; the polls after it read the tail and the marker only."""
    noise = [f"noise {n}" for n in range(30)]
    fake = FakeRay(lines(started(40), *noise, *(step(n) for n in range(1, 41))))
    async with adapter(fake) as cluster:
        first = await cluster.status(JOB, since_step=40)
        assert fake.asked == [
            f"GET /api/jobs/{JOB}",
            "GET /api/v0/logs/file",
            f"GET /api/jobs/{JOB}.started",
            f"GET /api/jobs/{JOB}/logs",
            "POST /api/jobs/",
        ]
        fake.asked.clear()
        second = await cluster.status(JOB, since_step=40)
        assert fake.asked == [
            f"GET /api/jobs/{JOB}",
            "GET /api/v0/logs/file",
            f"GET /api/jobs/{JOB}.started",
        ]
    assert first == second
    assert second.total_steps == 40
    assert second.started_at == T0
    assert second.history == []
    assert second.metrics is not None
    assert second.metrics.step == 40


@pytest.mark.parametrize(
    ("log", "problem"),
    [
        (lines(started(), step(2), step(2)), "step 2 after step 2"),
        (lines(step(1)), "steps without a start"),
        (lines(started(), started()), "a start after it started"),
        (lines(started(3), step(1), step(2), step(3), step(4)), "beyond total_steps"),
        (
            lines(
                started(),
                step(1),
                encode_event(CompletedEvent(time=T0, step=1)),
                encode_event(FailedEvent(time=T0, code="internal", message="x")),
            ),
            "both completed and failed",
        ),
        (lines(started(), 'LORA_EVENT {"v": 2, "type": "step"}'), "schema version 2"),
    ],
)
async def test_contradicting_events_are_a_bad_response(log: str, problem: str) -> None:
    """A log whose events contradict each other, or that are off the schema, is refused."""
    async with adapter(FakeRay(log)) as cluster:
        with pytest.raises(ClusterBadResponse, match=problem):
            await cluster.status(JOB)


async def test_succeeded_without_completed_is_failed() -> None:
    """Ray's SUCCEEDED without the trainer's completed event is a failure, with a clear code."""
    end = T0 + timedelta(minutes=5)
    fake = FakeRay(
        lines(started(), step(1)), status="SUCCEEDED", end_time=int(end.timestamp() * 1000)
    )
    async with adapter(fake) as cluster:
        status = await cluster.status(JOB)
    assert status.status is ClusterJobState.FAILED
    assert status.error is not None
    assert status.error.code == "no_result"
    assert status.ended_at == end


async def test_stop_after_completion_is_completed() -> None:
    """A job Ray stopped after the trainer reported completion is completed, with its adapter."""
    done = encode_event(
        CompletedEvent(time=T0 + timedelta(seconds=9), step=1, artifact_uri="s3://a/")
    )
    fake = FakeRay(lines(started(1), step(1), done), status="STOPPED")
    async with adapter(fake) as cluster:
        status = await cluster.status(JOB)
    assert (status.status, status.progress, status.artifact_uri) == (
        ClusterJobState.COMPLETED,
        100.0,
        "s3://a/",
    )
    assert status.ended_at == T0 + timedelta(seconds=9)


async def test_sigterm_not_from_a_stop_is_an_interruption() -> None:
    """A trainer that reports cancelled while Ray did not stop it (a drained node) failed."""
    cancelled = encode_event(CancelledEvent(time=T0 + timedelta(seconds=2), step=1))
    fake = FakeRay(lines(started(), step(1), cancelled), status="FAILED")
    async with adapter(fake) as cluster:
        status = await cluster.status(JOB)
    assert status.status is ClusterJobState.FAILED
    assert status.error is not None
    assert status.error.code == "interrupted"


async def test_transient_answers_are_retried_with_retry_after() -> None:
    """HTTP 503 is retried after the Retry-After Ray's proxy asked for, then succeeds."""
    answers = iter([httpx.Response(503, headers={"Retry-After": "2"})])
    fake = FakeRay(lines(started(), step(1)))

    def flaky(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or fake(request)

    sleeps = RecordingSleep()
    async with RayJobsCluster(
        "http://ray.invalid", "key", transport=httpx.MockTransport(flaky), sleep=sleeps
    ) as cluster:
        status = await cluster.status(JOB)
    assert status.current_step == 1
    assert sleeps.delays == [2.0]


async def test_server_errors_become_unavailable_after_the_attempts() -> None:
    """Ray's HTTP 500 (a traceback) on every attempt is unavailable, not a rejection."""
    sleeps = RecordingSleep()
    transport = httpx.MockTransport(lambda request: httpx.Response(500, text="Traceback ..."))
    async with RayJobsCluster(
        "http://ray.invalid", "key", transport=transport, max_attempts=2, sleep=sleeps
    ) as cluster:
        with pytest.raises(ClusterUnavailable, match="after 2 attempts"):
            await cluster.status(JOB)
    assert len(sleeps.delays) == 1


def test_submission_ids_cannot_collide() -> None:
    """Keys of plain characters keep their name; any other key is hashed under another prefix,
    and no submission id ends like a cancel marker."""
    assert submission_id_for("0b7e-uuid_1") == "lora-0b7e-uuid_1"
    hashed = submission_id_for("a/b c")
    assert hashed.startswith("lora.")
    assert hashed != submission_id_for("a/b  c")
    assert not submission_id_for("x.cancel").endswith(".cancel")


def test_empty_entrypoint_is_refused() -> None:
    """An empty trainer command is refused: Ray would run nothing and call it a success."""
    with pytest.raises(ValueError, match="entrypoint"):
        RayJobsCluster("http://ray.invalid", "key", entrypoint="  ")
