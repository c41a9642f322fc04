"""The port the processor talks to: one GPU cluster, whatever runs behind it."""

from __future__ import annotations

from typing import Protocol

from shared.cluster.models import CancelResult, ClusterJobStatus, SubmitRequest, SubmitResult


class TrainingCluster(Protocol):
    """Starts, watches and stops LoRA training runs on a GPU cluster.

    Every method is safe to call again after any failure: ``submit`` is idempotent by the
    request's ``idempotency_key``, ``status`` only reads, and cancelling a run that has already
    ended is a no-op. Adapters raise only :class:`~shared.errors.ClusterError` subclasses:

    - :class:`~shared.errors.ClusterUnavailable` when the call may succeed later (the cluster is
      down, slow, overloaded, or answered something that does not follow its contract:
      :class:`~shared.errors.ClusterBadResponse`);
    - :class:`~shared.errors.ClusterRejected` when repeating the same call cannot help (an
      invalid request, an unknown run).
    """

    async def submit(self, request: SubmitRequest) -> SubmitResult:
        """Start a run, or find the one already started with the same idempotency key."""
        ...

    async def status(self, external_job_id: str, since_step: int = 0) -> ClusterJobStatus:
        """Read a run's state, with the metrics recorded after step ``since_step``."""
        ...

    async def cancel(self, external_job_id: str) -> CancelResult:
        """Stop a run; a run that has already ended stays as it is, and the answer says how it
        ended (a cancel that arrives after the run completed answers ``completed``)."""
        ...

    async def aclose(self) -> None:
        """Release the connections this adapter holds."""
        ...
