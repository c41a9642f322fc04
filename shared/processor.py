"""One cycle of `process-training-jobs` (DESIGN section 7).

claim queued jobs -> sign each dataset URL and submit (concurrently) -> record the submissions
-> claim the jobs due for a poll -> poll them (concurrently) -> record every result -> deliver
pending cancels -> record the deliveries.

Each "claim" and "record" is one SQL function call for the whole batch, so a cycle sends the same
few statements for 10 jobs as for 1,000. Every call commits before the next HTTP phase starts: no
transaction is open while the cluster or storage is being called. Cycles may overlap: claims skip
locked rows, and every write checks this cycle's lease (see the processor migration).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from shared.cluster import SubmitRequest, TrainingCluster
from shared.config import ProcessorSettings
from shared.db import Database
from shared.errors import (
    ClusterRejected,
    ClusterUnavailable,
    DatasetFileMissing,
    StorageError,
    UnknownBucket,
)
from shared.storage import DatasetStorage

_T = TypeVar("_T")
_log = logging.getLogger(__name__)

# Time kept back at the end of the budget for the last database writes.
_WRITE_RESERVE_SECONDS = 3.0


@dataclass(frozen=True)
class ProcessorOptions:
    claim_batch_size: int = 25
    poll_batch_size: int = 1000
    cancel_batch_size: int = 200
    concurrency: int = 100
    time_budget_seconds: float = 45.0
    max_attempts: int = 5
    poll_interval_seconds: float = 10.0
    stall_factor: float = 10.0
    stall_min_seconds: float = 300.0

    @classmethod
    def from_settings(cls, settings: ProcessorSettings) -> ProcessorOptions:
        return cls(
            claim_batch_size=settings.processor_claim_batch_size,
            poll_batch_size=settings.processor_poll_batch_size,
            concurrency=settings.processor_concurrency,
            time_budget_seconds=settings.processor_time_budget_seconds,
            max_attempts=settings.processor_max_attempts,
            poll_interval_seconds=settings.processor_poll_interval_seconds,
            stall_factor=settings.processor_stall_factor,
            stall_min_seconds=settings.processor_stall_min_seconds,
        )

    @property
    def lease_seconds(self) -> int:
        # A lease outlives the cycle that took it, so only a crashed cycle's jobs are rescued.
        return int(self.time_budget_seconds * 2) + 30


@dataclass
class CycleSummary:
    claimed: int = 0
    submitted: int = 0
    polled: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    cancels_delivered: int = 0
    errors: int = 0
    skipped: int = 0
    statements: int = 0
    ms: int = 0
    stopped_early: bool = False
    messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Processor:
    """Runs cycles against a database, a GPU cluster and dataset storage it is given."""

    def __init__(
        self,
        db: Database,
        cluster: TrainingCluster,
        storage: DatasetStorage,
        options: ProcessorOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._cluster = cluster
        self._storage = storage
        self._options = options or ProcessorOptions()
        self._clock = clock

    async def run_cycle(self) -> CycleSummary:
        started = self._clock()
        deadline = started + self._options.time_budget_seconds
        summary = CycleSummary()
        owner = uuid.uuid4()

        await self._submit_queued(owner, deadline, summary)
        await self._poll_active(owner, deadline, summary)
        await self._deliver_cancels(deadline, summary)

        summary.ms = int((self._clock() - started) * 1000)
        return summary

    # --- database ------------------------------------------------------------------------------

    async def _call(self, summary: CycleSummary, name: str, args: dict[str, Any]) -> Any:
        summary.statements += 1
        return await asyncio.to_thread(self._db.call, name, args)

    def _time_left(self, deadline: float) -> float:
        return deadline - self._clock() - _WRITE_RESERVE_SECONDS

    # --- phase 1: submit -----------------------------------------------------------------------

    async def _submit_queued(
        self, owner: uuid.UUID, deadline: float, summary: CycleSummary
    ) -> None:
        if self._time_left(deadline) <= 0:
            summary.stopped_early = True
            return
        jobs: list[dict[str, Any]] = await self._call(
            summary,
            "processor_claim_queued",
            {
                "p_owner": owner,
                "p_limit": self._options.claim_batch_size,
                "p_lease_seconds": self._options.lease_seconds,
            },
        )
        summary.claimed = len(jobs)
        if not jobs:
            return
        results = await self._run_all(
            [functools.partial(self._submit_one, job) for job in jobs],
            deadline,
            fallback=lambda i: {"job_id": jobs[i]["job_id"], "outcome": "skipped"},
        )
        counts = await self._call(
            summary,
            "processor_record_submissions",
            {
                "p_owner": owner,
                "p_results": results,
                "p_max_attempts": self._options.max_attempts,
            },
        )
        summary.submitted = counts["submitted"]
        summary.failed += counts["failed"]
        summary.errors += sum(r["outcome"] == "transient" for r in results)
        summary.skipped += sum(r["outcome"] == "skipped" for r in results)
        summary.messages += [r["message"] for r in results if r.get("message")][:20]

    async def _submit_one(self, job: dict[str, Any]) -> dict[str, Any]:
        job_id = job["job_id"]
        try:
            url = await asyncio.to_thread(
                self._storage.signed_url, job["storage_bucket"], job["storage_path"]
            )
        except (UnknownBucket, DatasetFileMissing) as exc:
            return _rejected(job_id, f"The dataset cannot be read: {exc.message}")
        except StorageError as exc:
            return _transient(job_id, f"Dataset storage is unavailable: {exc.message}")
        try:
            request = SubmitRequest(
                idempotency_key=job["idempotency_key"],
                job_id=job_id,
                dataset_url=url,
                hyperparameters=job["hyperparameters"],
                gpu_config=job["gpu_config"],
            )
        except ValidationError as exc:
            return _rejected(job_id, f"The job's configuration is invalid: {_first_error(exc)}")
        try:
            result = await self._cluster.submit(request)
        except ClusterRejected as exc:
            return _rejected(job_id, f"The GPU cluster refused the job: {exc.message}")
        except ClusterUnavailable as exc:
            return _transient(job_id, exc.message)
        return {"job_id": job_id, "outcome": "submitted", "external_job_id": result.external_job_id}

    # --- phase 2: poll -------------------------------------------------------------------------

    async def _poll_active(self, owner: uuid.UUID, deadline: float, summary: CycleSummary) -> None:
        if self._time_left(deadline) <= 0:
            summary.stopped_early = True
            return
        jobs: list[dict[str, Any]] = await self._call(
            summary,
            "processor_claim_polls",
            {
                "p_owner": owner,
                "p_limit": self._options.poll_batch_size,
                "p_lease_seconds": self._options.lease_seconds,
            },
        )
        if not jobs:
            return
        results = await self._run_all(
            [functools.partial(self._poll_one, job) for job in jobs],
            deadline,
            fallback=lambda i: {"job_id": jobs[i]["job_id"], "outcome": "skipped"},
        )
        counts = await self._call(
            summary,
            "processor_record_polls",
            {
                "p_owner": owner,
                "p_results": results,
                "p_settings": {
                    "max_attempts": self._options.max_attempts,
                    "poll_interval_seconds": self._options.poll_interval_seconds,
                    "stall_factor": self._options.stall_factor,
                    "stall_min_seconds": self._options.stall_min_seconds,
                },
            },
        )
        summary.polled = sum(r["outcome"] == "ok" for r in results)
        summary.completed += counts["completed"]
        summary.failed += counts["failed"]
        summary.cancelled += counts["cancelled"]
        summary.errors += sum(r["outcome"] == "transient" for r in results)
        summary.skipped += sum(r["outcome"] == "skipped" for r in results)

    async def _poll_one(self, job: dict[str, Any]) -> dict[str, Any]:
        job_id = job["job_id"]
        try:
            status = await self._cluster.status(job["external_job_id"], job["since_step"])
        except ClusterRejected as exc:
            return _rejected(job_id, f"The GPU cluster cannot report on the job: {exc.message}")
        except ClusterUnavailable as exc:
            return _transient(job_id, exc.message)
        return {
            "job_id": job_id,
            "outcome": "ok",
            **status.model_dump(mode="json"),
        }

    # --- phase 3: cancels ----------------------------------------------------------------------

    async def _deliver_cancels(self, deadline: float, summary: CycleSummary) -> None:
        if self._time_left(deadline) <= 0:
            summary.stopped_early = True
            return
        pending: list[dict[str, Any]] = await self._call(
            summary, "processor_pending_cancels", {"p_limit": self._options.cancel_batch_size}
        )
        if not pending:
            return
        outcomes = await self._run_all(
            [functools.partial(self._cancel_one, job) for job in pending],
            deadline,
            fallback=lambda i: None,
        )
        deliveries = [outcome for outcome in outcomes if outcome is not None]
        if deliveries:
            summary.cancels_delivered = await self._call(
                summary, "processor_record_cancels_delivered", {"p_deliveries": deliveries}
            )
        summary.errors += len(pending) - len(deliveries)

    async def _cancel_one(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """Stop the job's run at the cluster: the delivery to record, or None to try again."""
        delivered: dict[str, Any] = {"job_id": job["job_id"], "external_job_id": None}
        external_job_id = job["external_job_id"]
        if external_job_id is None:
            # Cancelled while a submission that got no answer was in flight: the same key tells
            # us the run the cluster started, if it started one.
            outcome = await self._submit_one(job)
            if outcome["outcome"] == "rejected":
                return delivered  # the cluster took nothing: nothing to stop
            if outcome["outcome"] != "submitted":
                return None
            external_job_id = outcome["external_job_id"]
        try:
            await self._cluster.cancel(external_job_id)
        except ClusterRejected as exc:
            # The cluster does not know the run (any more): there is nothing left to stop.
            if exc.status_code != 404:
                return None
        except ClusterUnavailable:
            return None
        return {**delivered, "external_job_id": external_job_id}

    # --- concurrency ---------------------------------------------------------------------------

    async def _run_all(
        self,
        calls: Sequence[Callable[[], Awaitable[_T]]],
        deadline: float,
        *,
        fallback: Callable[[int], _T],
    ) -> list[_T]:
        """Run the calls at most `concurrency` at a time. A call not finished when the budget
        runs out is cancelled and answered by `fallback` (its job is left for the next cycle),
        and so is one that raised something unexpected, which is logged: one job's bug must not
        keep the others' results from being recorded."""

        # Phases run one after the other, so a bound per call is the bound of the cycle.
        semaphore = asyncio.Semaphore(self._options.concurrency)

        async def bounded(call: Callable[[], Awaitable[_T]]) -> _T:
            async with semaphore:
                return await call()

        tasks = [asyncio.ensure_future(bounded(call)) for call in calls]
        timeout = max(self._time_left(deadline), 0.0)
        await asyncio.wait(tasks, timeout=timeout)
        results: list[_T] = []
        for index, task in enumerate(tasks):
            if task.done() and not task.cancelled() and task.exception() is None:
                results.append(task.result())
                continue
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                _log.error("processor task failed", exc_info=task.exception())
            results.append(fallback(index))
        await asyncio.gather(*tasks, return_exceptions=True)
        return results


def _rejected(job_id: str, message: str) -> dict[str, Any]:
    return {"job_id": job_id, "outcome": "rejected", "message": message}


def _transient(job_id: str, message: str) -> dict[str, Any]:
    return {"job_id": job_id, "outcome": "transient", "message": message}


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
