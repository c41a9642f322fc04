"""One cycle of `process-training-jobs` (docs/architecture.md, "The processor cycle").

claim queued jobs -> sign each dataset URL and submit (concurrently) -> record the submissions
-> claim the jobs due for a poll -> poll them (concurrently) -> record every result -> deliver
pending cancels -> record the deliveries.

Each "claim" and "record" is one SQL function call for the whole batch, so a cycle sends the same
few statements for 10 jobs as for 1,000. Every call commits before the next HTTP phase starts: no
transaction is open while the cluster or storage is being called. Cycles may overlap: claims skip
locked rows, and every write checks this cycle's lease (see the processor migration).

A batch the database refuses is split in halves until the refused rows stand alone, so one bad
row never keeps the rest of its batch from being recorded; a row refused alone fails its job with
the database's reason (or, if even that is refused, is released and logged).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from shared.cluster import SubmitRequest, TrainingCluster
from shared.config import ProcessorSettings
from shared.db import Database
from shared.errors import (
    ClusterRejected,
    ClusterUnavailable,
    DatabaseError,
    DatabaseUnavailable,
    DatasetFileMissing,
    StorageError,
    UnknownBucket,
)
from shared.processor_contract import (
    CancelDelivery,
    JobFailure,
    PollOutcome,
    PollResult,
    SubmissionOutcome,
    SubmissionResult,
)
from shared.storage import ArtifactStorage, DatasetStorage

_T = TypeVar("_T")


class Storage(DatasetStorage, ArtifactStorage, Protocol):
    """What the processor signs URLs with: datasets to download, artifacts to upload."""


_R = TypeVar("_R", SubmissionResult, PollResult, CancelDelivery)
_log = logging.getLogger(__name__)

# Time kept back at the end of the budget for the last database writes.
_WRITE_RESERVE_SECONDS = 3.0


@dataclass
class CycleSummary:
    claimed: int = 0
    submitted: int = 0
    polled: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    cancels_delivered: int = 0
    lost_contact: int = 0
    errors: int = 0
    skipped: int = 0
    unrecorded: int = 0
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
        storage: Storage,
        settings: ProcessorSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._cluster = cluster
        self._storage = storage
        self._settings = settings
        self._clock = clock

    async def run_cycle(self) -> CycleSummary:
        started = self._clock()
        deadline = started + self._settings.processor_time_budget_seconds
        summary = CycleSummary()
        owner = uuid.uuid4()

        await self._submit_queued(owner, deadline, summary)
        await self._poll_active(owner, deadline, summary)
        await self._deliver_cancels(deadline, summary)

        summary.ms = int((self._clock() - started) * 1000)
        return summary

    # --- database ------------------------------------------------------------------------------

    async def _call(self, summary: CycleSummary, name: str, args: Mapping[str, Any]) -> Any:
        summary.statements += 1
        return await asyncio.to_thread(self._db.call, name, args)

    async def _record(
        self,
        summary: CycleSummary,
        owner: uuid.UUID | None,
        name: str,
        args: Callable[[list[dict[str, Any]]], dict[str, Any]],
        results: Sequence[_R],
    ) -> Counter[str]:
        """Record `results` with one call of `name`. If the database refuses the batch, each half
        is recorded on its own, down to the single rows it refuses, within a budget of calls
        that grows with the logarithm of the batch. Returns the counts the calls answered.

        Rows refused alone fail their jobs, in one call, with the database's reason. When no row
        at all could be recorded, the fault is the statement's, not the rows' (a broken
        function, say): then nothing is failed, and every job is left for the next cycle."""
        counts: Counter[str] = Counter()
        refused: list[tuple[_R, DatabaseError]] = []
        unresolved: list[_R] = []
        budget = [4 * len(results).bit_length()]
        recorded = await self._record_parts(
            summary, name, args, results, counts, refused, unresolved, budget
        )
        if refused or unresolved:
            await self._set_aside(
                summary, owner, name, refused, unresolved, systematic=not recorded
            )
        return counts

    async def _record_parts(
        self,
        summary: CycleSummary,
        name: str,
        args: Callable[[list[dict[str, Any]]], dict[str, Any]],
        results: Sequence[_R],
        counts: Counter[str],
        refused: list[tuple[_R, DatabaseError]],
        unresolved: list[_R],
        budget: list[int],
    ) -> bool:
        """Whether any of `results` was recorded; what was not lands in `refused` (alone) or
        `unresolved` (the budget ran out first)."""
        try:
            answer = await self._call(summary, name, args([r.as_row() for r in results]))
        except DatabaseUnavailable:
            raise
        except DatabaseError as exc:
            if len(results) == 1:
                refused.append((results[0], exc))
                return False
            if budget[0] < 2:
                unresolved.extend(results)
                return False
            budget[0] -= 2
            middle = len(results) // 2
            parts = [results[:middle], results[middle:]]
            recorded = [
                await self._record_parts(
                    summary, name, args, part, counts, refused, unresolved, budget
                )
                for part in parts
            ]
            return any(recorded)
        if isinstance(answer, int):
            counts["count"] += answer
        else:
            counts.update({k: v for k, v in (answer or {}).items() if isinstance(v, int)})
        return True

    async def _set_aside(
        self,
        summary: CycleSummary,
        owner: uuid.UUID | None,
        name: str,
        refused: Sequence[tuple[SubmissionResult | PollResult | CancelDelivery, DatabaseError]],
        unresolved: Sequence[SubmissionResult | PollResult | CancelDelivery],
        *,
        systematic: bool,
    ) -> None:
        """Log what the database would not record; fail the jobs whose rows it refused alone
        (one call), and release the rest for the next cycle (one call)."""
        for result, exc in refused:
            _log.error(
                "database refused one job's result",
                extra={
                    "function": name,
                    "job_id": str(result.job_id),
                    "sqlstate": getattr(exc, "sqlstate", None),
                    "database_error": str(exc.__cause__ or exc.message),
                },
            )
        if unresolved or systematic:
            _log.error(
                "database refused a batch; its jobs are left for the next cycle",
                extra={
                    "function": name,
                    "jobs": len(unresolved) + (len(refused) if systematic else 0),
                    "refused_alone": len(refused),
                },
            )
        summary.unrecorded += len(refused) + len(unresolved)
        if owner is None:
            return  # cancel deliveries: delivered again next cycle, nothing to fail
        release = [str(r.job_id) for r in unresolved]
        if systematic:
            release += [str(r.job_id) for r, _ in refused]
        elif refused:
            failures = [
                JobFailure(
                    job_id=r.job_id,
                    message=(
                        "The runner could not record what the GPU cluster reported for this job "
                        f"(database error {getattr(exc, 'sqlstate', None) or 'unknown'}: "
                        f"{exc.__cause__ or exc.message})."
                    )[:2000],
                ).as_row()
                for r, exc in refused
            ]
            try:
                answer = await self._call(
                    summary, "processor_fail_jobs", {"p_owner": owner, "p_failures": failures}
                )
                summary.failed += int(answer["failed"])
            except DatabaseUnavailable:
                raise
            except DatabaseError as exc:
                _log.error(
                    "database refused to fail the jobs; releasing them",
                    extra={
                        "sqlstate": getattr(exc, "sqlstate", None),
                        "database_error": str(exc.__cause__ or exc.message),
                    },
                )
                release += [str(r.job_id) for r, _ in refused]
        if release:
            await self._call(
                summary, "processor_release_jobs", {"p_owner": owner, "p_job_ids": release}
            )

    def _time_left(self, deadline: float) -> float:
        return deadline - self._clock() - _WRITE_RESERVE_SECONDS

    # --- phase 1: submit -----------------------------------------------------------------------

    async def _submit_queued(
        self, owner: uuid.UUID, deadline: float, summary: CycleSummary
    ) -> None:
        if self._time_left(deadline) <= 0:
            summary.stopped_early = True
            return
        settings = self._settings
        jobs: list[dict[str, Any]] = await self._call(
            summary,
            "processor_claim_queued",
            {
                "p_owner": owner,
                "p_limit": settings.processor_claim_batch_size,
                "p_lease_seconds": settings.lease_seconds,
                "p_default_user_limit": settings.processor_max_active_jobs_per_user,
            },
        )
        summary.claimed = len(jobs)
        if not jobs:
            return
        results = await self._run_all(
            [functools.partial(self._submit_one, job) for job in jobs],
            deadline,
            fallback=lambda i: SubmissionResult(
                job_id=jobs[i]["job_id"], outcome=SubmissionOutcome.SKIPPED
            ),
        )
        counts = await self._record(
            summary,
            owner,
            "processor_record_submissions",
            lambda rows: {
                "p_owner": owner,
                "p_results": rows,
                "p_max_attempts": settings.processor_max_attempts,
            },
            results,
        )
        summary.submitted = counts["submitted"]
        summary.failed += counts["failed"]
        summary.errors += sum(r.outcome is SubmissionOutcome.TRANSIENT for r in results)
        summary.skipped += sum(r.outcome is SubmissionOutcome.SKIPPED for r in results)
        summary.messages += [r.message for r in results if r.message][:20]

    async def _submit_one(self, job: dict[str, Any]) -> SubmissionResult:
        job_id = job["job_id"]

        def rejected(message: str) -> SubmissionResult:
            return SubmissionResult(
                job_id=job_id, outcome=SubmissionOutcome.REJECTED, message=message
            )

        gpu_type = (job.get("gpu_config") or {}).get("gpu_type")
        if job.get("hourly_rate") is None:
            return rejected(
                f"GPU type {gpu_type!r} has no price, so the job would run unbilled: add it to "
                "gpu_prices, or choose a priced GPU type."
            )
        try:
            url = await asyncio.to_thread(
                self._storage.signed_url, job["storage_bucket"], job["storage_path"]
            )
            artifacts = await asyncio.to_thread(
                self._storage.upload_targets, job["user_id"], job_id
            )
        except (UnknownBucket, DatasetFileMissing) as exc:
            return rejected(f"The dataset cannot be read: {exc.message}")
        except StorageError as exc:
            return SubmissionResult(
                job_id=job_id,
                outcome=SubmissionOutcome.TRANSIENT,
                message=f"Storage is unavailable: {exc.message}",
            )
        try:
            request = SubmitRequest(
                idempotency_key=job["idempotency_key"],
                job_id=job_id,
                dataset_url=url,
                hyperparameters=job["hyperparameters"],
                gpu_config=job["gpu_config"],
                artifacts=artifacts,
            )
        except ValidationError as exc:
            return rejected(f"The job's configuration is invalid: {_first_error(exc)}")
        try:
            result = await self._cluster.submit(request)
        except ClusterRejected as exc:
            return rejected(f"The GPU cluster refused the job: {exc.message}")
        except ClusterUnavailable as exc:
            return SubmissionResult(
                job_id=job_id, outcome=SubmissionOutcome.TRANSIENT, message=exc.message
            )
        return SubmissionResult(
            job_id=job_id,
            outcome=SubmissionOutcome.SUBMITTED,
            external_job_id=result.external_job_id,
        )

    # --- phase 2: poll -------------------------------------------------------------------------

    async def _poll_active(self, owner: uuid.UUID, deadline: float, summary: CycleSummary) -> None:
        if self._time_left(deadline) <= 0:
            summary.stopped_early = True
            return
        settings = self._settings
        jobs: list[dict[str, Any]] = await self._call(
            summary,
            "processor_claim_polls",
            {
                "p_owner": owner,
                "p_limit": settings.processor_poll_batch_size,
                "p_lease_seconds": settings.lease_seconds,
                "p_settle_seconds": settings.processor_settle_seconds,
            },
        )
        if not jobs:
            return
        results = await self._run_all(
            [functools.partial(self._poll_one, job) for job in jobs],
            deadline,
            fallback=lambda i: PollResult(job_id=jobs[i]["job_id"], outcome=PollOutcome.SKIPPED),
        )
        counts = await self._record(
            summary,
            owner,
            "processor_record_polls",
            lambda rows: {
                "p_owner": owner,
                "p_results": rows,
                "p_poll_interval_seconds": settings.processor_poll_interval_seconds,
                "p_backoff_max_seconds": settings.processor_poll_backoff_max_seconds,
                "p_stall_factor": settings.processor_stall_factor,
                "p_stall_min_seconds": settings.processor_stall_min_seconds,
                "p_lost_contact_fail_seconds": settings.processor_lost_contact_fail_seconds,
            },
            results,
        )
        summary.polled = sum(r.outcome is PollOutcome.OK for r in results)
        summary.completed += counts["completed"]
        summary.failed += counts["failed"]
        summary.cancelled += counts["cancelled"]
        summary.lost_contact += sum(r.outcome is PollOutcome.TRANSIENT for r in results)
        summary.errors += sum(r.outcome is PollOutcome.TRANSIENT for r in results)
        summary.skipped += sum(r.outcome is PollOutcome.SKIPPED for r in results)

    async def _poll_one(self, job: dict[str, Any]) -> PollResult:
        job_id = job["job_id"]
        try:
            status = await self._cluster.status(job["external_job_id"], job["since_step"])
        except ClusterRejected as exc:
            return PollResult(
                job_id=job_id,
                outcome=PollOutcome.REJECTED,
                message=f"The GPU cluster cannot report on the job: {exc.message}",
            )
        except ClusterUnavailable as exc:
            return PollResult(job_id=job_id, outcome=PollOutcome.TRANSIENT, message=exc.message)
        return PollResult(job_id=job_id, outcome=PollOutcome.OK, report=status)

    # --- phase 3: cancels ----------------------------------------------------------------------

    async def _deliver_cancels(self, deadline: float, summary: CycleSummary) -> None:
        if self._time_left(deadline) <= 0:
            summary.stopped_early = True
            return
        pending: list[dict[str, Any]] = await self._call(
            summary,
            "processor_pending_cancels",
            {"p_limit": self._settings.processor_cancel_batch_size},
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
            counts = await self._record(
                summary,
                None,
                "record_cancels_delivered",
                lambda rows: {"p_deliveries": rows},
                deliveries,
            )
            summary.cancels_delivered = counts["count"]
        summary.errors += len(pending) - len(deliveries)

    async def _cancel_one(self, job: dict[str, Any]) -> CancelDelivery | None:
        """Stop the job's run at the cluster: the delivery to record, or None to try again.

        How the run ended (the cluster may answer that it had already completed) is learned by
        the poll that follows every delivery, which also fetches the run's last points."""
        job_id = job["job_id"]
        external_job_id = job["external_job_id"]
        if external_job_id is None:
            # Its submission got no answer: the same key tells us the run the cluster started,
            # if it started one.
            outcome = await self._submit_one(job)
            if outcome.outcome is SubmissionOutcome.REJECTED:
                return CancelDelivery(job_id=job_id)  # the cluster took nothing: nothing to stop
            if outcome.outcome is not SubmissionOutcome.SUBMITTED:
                return None
            external_job_id = outcome.external_job_id
            assert external_job_id is not None  # noqa: S101 - a submitted outcome carries one
        try:
            await self._cluster.cancel(external_job_id)
        except ClusterRejected as exc:
            # The cluster does not know the run (any more): there is nothing left to stop.
            if exc.status_code != 404:
                return None
        except ClusterUnavailable:
            return None
        return CancelDelivery(job_id=job_id, external_job_id=external_job_id)

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
        semaphore = asyncio.Semaphore(self._settings.processor_concurrency)

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


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
