"""The simulated cluster's state: its runs, how each one advances, and what tests count.

A run advances with the clock rather than with a background loop: its state is computed from
the time it started running whenever somebody asks, so a thousand runs cost nothing between
polls. Only the dataset download runs as a task.

Every time a run reports (its points, ``started_at``, ``ended_at``) is read off one monotonic
clock anchored to the wall clock when the run is submitted, so the times are exact to the
microsecond and in order even if the system clock is stepped while the run goes.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from infra.local.simulated_training import (
    InvalidDataset,
    TrainingPlan,
    TrainingSettings,
    count_training_pairs,
    step_time,
)

MAX_DATASET_BYTES = 256 * 1024 * 1024
# Downloads under way at once; the others wait for a slot (as queued runs) and never time out
# for it: a real cluster does not fail a run because its own download pool is busy.
DEFAULT_MAX_DOWNLOADS = 64
_TERMINAL = frozenset({"completed", "failed", "cancelled"})


class DatasetUnavailable(Exception):
    """The dataset could not be downloaded through its URL."""


@dataclass
class Pacing:
    """How fast runs go and how slowly the API answers; changeable while the simulator runs."""

    steps_per_second: float = 5.0
    init_seconds: float = 2.0
    latency: float = 0.0

    def __post_init__(self) -> None:
        if self.steps_per_second <= 0:
            raise ValueError("steps_per_second must be positive")
        if self.init_seconds < 0 or self.latency < 0:
            raise ValueError("init_seconds and latency must not be negative")


@dataclass
class Submission:
    """What arrived for one idempotency key: every POST, and the one run it created."""

    requests: int = 0
    external_job_id: str | None = None


@dataclass
class _Failure:
    code: str
    message: str


@dataclass
class SimulatedJob:
    """One training run. Its pace is fixed when it is submitted."""

    external_job_id: str
    idempotency_key: str
    settings: TrainingSettings
    seed: int
    steps_per_second: float
    init_seconds: float
    phase: str = "queued"
    plan: TrainingPlan | None = None
    cancel_requests: int = 0
    download: asyncio.Task[None] | None = None
    # Where the submission asked for the adapter to go; nothing is uploaded there.
    artifact_location: str | None = None
    # The monotonic clock and the wall clock at the same moment: _wall() converts the one to the
    # other, so that every time the run reports comes from the monotonic clock.
    _anchor: tuple[float, datetime] = field(
        default_factory=lambda: (time.monotonic(), datetime.now(UTC)), init=False
    )
    _running_at: float = field(default=math.inf, init=False)
    _running_since: datetime | None = field(default=None, init=False)
    _started_at: datetime | None = field(default=None, init=False)
    _ended_at: datetime | None = field(default=None, init=False)
    _ended_at_step: int = field(default=0, init=False)
    _failure: _Failure | None = field(default=None, init=False)
    _fail_at: tuple[int, _Failure] | None = field(default=None, init=False)
    _points: list[dict[str, Any]] = field(default_factory=list, init=False)

    def dataset_ready(self, training_pairs: int) -> None:
        """Plan the run from its dataset; it starts running after the initialization delay."""
        if self.phase in _TERMINAL:
            return
        self.plan = self.settings.plan(training_pairs, self.seed)
        self._running_at = time.monotonic() + self.init_seconds
        self._running_since = self._wall(self._running_at)

    def fail(self, code: str, message: str) -> None:
        """End the run now as failed, unless it has already ended."""
        status, step = self.advance()
        if status not in _TERMINAL:
            self._end("failed", step, self._wall(time.monotonic()))
            self._failure = _Failure(code, message)

    def cancel(self) -> str:
        """Stop the run unless it has ended: ``cancelled``, or the state the run had ended in."""
        self.cancel_requests += 1
        status, step = self.advance()
        if status in _TERMINAL:
            return status
        self._end("cancelled", step, self._wall(time.monotonic()))
        if self.download is not None:
            self.download.cancel()
        return self.phase

    def fail_at_step(self, step: int, code: str, message: str) -> None:
        """Make the run fail when it reaches ``step``, which it must not have reached yet."""
        status, current = self.advance()
        if status in _TERMINAL or step <= current:
            raise ValueError(f"the run is {status} at step {current}; it cannot fail at {step}")
        if self.plan is not None and step > self.plan.total_steps:
            raise ValueError(f"the run has only {self.plan.total_steps} steps")
        self._fail_at = (step, _Failure(code, message))

    def advance(self) -> tuple[str, int]:
        """Bring the run up to the present: its status and the last step it finished."""
        if self.phase in _TERMINAL:
            return self.phase, self._ended_at_step
        now = time.monotonic()
        if self.plan is None or self._running_since is None or now < self._running_at:
            return self.phase, 0
        self._started_at = self._running_since
        elapsed = now - self._running_at
        step = min(self.plan.total_steps, math.floor(elapsed * self.steps_per_second))
        if self._fail_at is not None and step >= self._fail_at[0]:
            # The failing step never finishes: the last point is the one before it, and the run
            # stopped when the failing step would have finished, which is when it reads failed.
            failing_step, self._failure = self._fail_at
            ended_at = step_time(self._running_since, failing_step, self.steps_per_second)
            self._end("failed", failing_step - 1, ended_at)
            return self.phase, self._ended_at_step
        if step >= self.plan.total_steps:
            # It ended when its last step was recorded.
            self._end(
                "completed", step, step_time(self._running_since, step, self.steps_per_second)
            )
            return self.phase, step
        self.phase = "running"
        return self.phase, step

    def _end(self, phase: str, step: int, ended_at: datetime) -> None:
        self.phase, self._ended_at_step, self._ended_at = phase, step, ended_at

    def _wall(self, monotonic: float) -> datetime:
        """The wall-clock time of a monotonic clock reading."""
        anchor_monotonic, anchor_wall = self._anchor
        return anchor_wall + timedelta(seconds=monotonic - anchor_monotonic)

    def status_body(self, since_step: int) -> dict[str, Any]:
        """The contract's answer to ``GET /training/status/{id}?since_step=N``."""
        status, step = self.advance()
        points = self._points_until(step)
        plan = self.plan
        progress = 100.0 if status == "completed" else 0.0
        if plan is not None and status != "completed":
            progress = round(100 * step / plan.total_steps, 2)
        return {
            "status": status,
            "progress": progress,
            "current_epoch": plan.epoch_of(step) if plan else 0,
            "total_epochs": self.settings.epochs,
            "current_step": step,
            "total_steps": plan.total_steps if plan else None,
            # Null until the run starts training, and for a run stopped before it did.
            "started_at": None if self._started_at is None else self._started_at.isoformat(),
            "ended_at": None if self._ended_at is None else self._ended_at.isoformat(),
            "metrics": points[-1] if points else None,
            "history": points[since_step:],
            "error": None
            if self._failure is None
            else {"code": self._failure.code, "message": self._failure.message},
            "artifact_uri": self._artifact_uri() if status == "completed" else None,
        }

    def _artifact_uri(self) -> str:
        # The adapter goes under adapter/ of the location the submission gave, if it gave one.
        if self.artifact_location is not None:
            return f"{self.artifact_location.rstrip('/')}/adapter/"
        return f"s3://lora-artifacts/{self.external_job_id}/adapter"

    def _points_until(self, step: int) -> list[dict[str, Any]]:
        # Points are made once and kept, so every poll serves the very same values.
        if self.plan is not None and self._running_since is not None:
            for next_step in range(len(self._points) + 1, step + 1):
                recorded_at = step_time(self._running_since, next_step, self.steps_per_second)
                self._points.append(self.plan.point(next_step, recorded_at))
        return self._points[:step]


class SimulatedCluster:
    """Every run the simulator knows, keyed by external id and by idempotency key."""

    def __init__(
        self,
        pacing: Pacing,
        downloads: httpx.AsyncClient,
        max_downloads: int = DEFAULT_MAX_DOWNLOADS,
    ) -> None:
        if max_downloads < 1:
            raise ValueError("max_downloads must be at least 1")
        self.pacing = pacing
        self.jobs: dict[str, SimulatedJob] = {}
        self.submissions: dict[str, Submission] = {}
        self.requests: Counter[str] = Counter()
        self._downloads = downloads
        self._download_slots = asyncio.Semaphore(max_downloads)

    def submission(self, idempotency_key: str) -> Submission:
        """What has arrived so far for an idempotency key."""
        return self.submissions.setdefault(idempotency_key, Submission())

    def find(self, idempotency_key: str) -> SimulatedJob | None:
        """The run already started for an idempotency key, if any."""
        submission = self.submissions.get(idempotency_key)
        if submission is None or submission.external_job_id is None:
            return None
        return self.jobs[submission.external_job_id]

    def start(
        self,
        *,
        idempotency_key: str,
        dataset_url: str,
        settings: TrainingSettings,
        job_id: str | None,
        artifact_location: str | None = None,
    ) -> SimulatedJob:
        """Start a new run for an idempotency key that has none, and fetch its dataset."""
        if self.find(idempotency_key) is not None:
            raise ValueError(f"a run already exists for idempotency key {idempotency_key}")
        external_job_id = f"simjob-{uuid.uuid4().hex}"
        # Seeded by the runner's job id when given, so a job's curves survive a simulator restart.
        seed_source = job_id or idempotency_key
        job = SimulatedJob(
            external_job_id=external_job_id,
            idempotency_key=idempotency_key,
            settings=settings,
            seed=int.from_bytes(hashlib.sha256(seed_source.encode()).digest()[:8], "big"),
            steps_per_second=self.pacing.steps_per_second,
            init_seconds=self.pacing.init_seconds,
            artifact_location=artifact_location,
        )
        self.jobs[external_job_id] = job
        self.submission(idempotency_key).external_job_id = external_job_id
        job.download = asyncio.create_task(self._prepare(job, dataset_url))
        return job

    def reset(self, pacing: Pacing) -> None:
        """Forget every run and count, and go back to the given pacing."""
        self.stop_downloads()
        self.jobs.clear()
        self.submissions.clear()
        self.requests.clear()
        self.pacing = pacing

    def stop_downloads(self) -> None:
        """Abandon the dataset downloads still under way."""
        for job in self.jobs.values():
            if job.download is not None:
                job.download.cancel()

    async def _prepare(self, job: SimulatedJob, dataset_url: str) -> None:
        # A run waiting for a download slot stays queued, however long it takes: the simulator's
        # own capacity must never be what fails a run.
        async with self._download_slots:
            if job.phase == "queued":
                job.phase = "initializing"
            try:
                pairs = count_training_pairs(await self._download(dataset_url))
            except DatasetUnavailable as exc:
                job.fail("dataset_unavailable", str(exc))
            except InvalidDataset as exc:
                job.fail("dataset_invalid", str(exc))
            else:
                job.dataset_ready(pairs)

    async def _download(self, url: str) -> bytes:
        try:
            async with self._downloads.stream("GET", url) as response:
                if response.status_code >= 400:
                    # Storage services answer an expired or forged signature with one of these.
                    expired = response.status_code in (400, 401, 403)
                    hint = " (the signed URL may have expired)" if expired else ""
                    raise DatasetUnavailable(
                        f"downloading the dataset failed with HTTP {response.status_code} "
                        f"{response.reason_phrase}{hint}"
                    )
                content = bytearray()
                async for chunk in response.aiter_bytes():
                    content += chunk
                    if len(content) > MAX_DATASET_BYTES:
                        raise InvalidDataset(
                            f"the dataset is larger than {MAX_DATASET_BYTES // 2**20} MiB"
                        )
                return bytes(content)
        except httpx.InvalidURL as exc:
            raise DatasetUnavailable(f"the dataset URL is not valid: {exc}") from exc
        except httpx.HTTPError as exc:
            raise DatasetUnavailable(
                f"the dataset could not be downloaded: {type(exc).__name__}: {exc}"
            ) from exc
