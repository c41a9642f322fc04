"""The contract between the processor (Python) and its SQL functions, typed in one place.

Each phase hands the database a batch of results, one per job, whose ``outcome`` says what
happened at the cluster. The SQL functions accept only the outcomes they list
(``processor_submission_outcomes()``, ``processor_poll_outcomes()``) and raise on any other, and a
test holds those lists equal to the enums here, so a typo fails loudly on both sides.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from shared.cluster import ClusterJobStatus


class SubmissionOutcome(StrEnum):
    """What came of submitting one job."""

    SUBMITTED = "submitted"
    """The cluster runs it (or already did, under the same idempotency key)."""
    REJECTED = "rejected"
    """It can never run as it is: the job fails with the message, and nothing is running."""
    TRANSIENT = "transient"
    """No answer this time; an attempt is counted."""
    SKIPPED = "skipped"
    """The cycle had no time for it; nothing is counted."""


class PollOutcome(StrEnum):
    """What came of asking the cluster about one job."""

    OK = "ok"
    """The cluster reported on the run."""
    REJECTED = "rejected"
    """The cluster does not know the run: the job fails, and there is nothing left to stop."""
    TRANSIENT = "transient"
    """No answer this time: contact is lost, which is not the job's failure."""
    SKIPPED = "skipped"
    """The cycle had no time for it; it is due again at once."""


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: UUID

    def as_row(self) -> dict[str, Any]:
        """The JSON object the SQL function reads for this job."""
        return self.model_dump(mode="json", exclude_none=True)


class SubmissionResult(_Result):
    """One job's line in ``processor_record_submissions``."""

    outcome: SubmissionOutcome
    external_job_id: str | None = None
    message: str | None = None


class PollResult(_Result):
    """One job's line in ``processor_record_polls``: the outcome and, when it is ``ok``, the
    cluster's report flattened beside it."""

    outcome: PollOutcome
    message: str | None = None
    report: ClusterJobStatus | None = None

    def as_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"job_id": str(self.job_id), "outcome": self.outcome.value}
        if self.message is not None:
            row["message"] = self.message
        if self.report is not None:
            row.update(self.report.model_dump(mode="json"))
        return row


class CancelDelivery(_Result):
    """A cancel the cluster acknowledged (or never needed), for ``record_cancels_delivered``."""

    external_job_id: str | None = None


class JobFailure(_Result):
    """A job to fail with a message, for ``processor_fail_jobs``."""

    message: str
