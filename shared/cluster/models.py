"""What the processor sends to a GPU cluster and what it gets back, whatever the backend.

These types are the processor's side of every cluster adapter: an adapter translates them to and
from its own wire format. The REST contract (openapi/cluster.yaml) happens to use the same
field names, so :class:`~shared.cluster.rest.RestTrainingCluster` validates the cluster's JSON
straight into them.

Unknown fields in a cluster's answers are ignored so that a cluster may add fields without
breaking older runners.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Self
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)

from shared.training_events import ArtifactTargets


class ClusterJobState(StrEnum):
    """Where a training run stands on the cluster."""

    QUEUED = "queued"
    INITIALIZING = "initializing"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether the run has ended: nothing about it changes any more."""
        return self in _TERMINAL_STATES


_TERMINAL_STATES = frozenset(
    {ClusterJobState.COMPLETED, ClusterJobState.FAILED, ClusterJobState.CANCELLED}
)


# The database refuses larger hyperparameters too (a CHECK on training_jobs); a test holds the two
# numbers together.
MAX_HYPERPARAMETERS_BYTES = 64 * 1024


class _ClusterModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class GpuConfig(_ClusterModel):
    """The hardware a run asks for. ``gpu_count`` is required and whole: billing multiplies by
    it, so a missing or fractional count is refused rather than guessed."""

    gpu_type: str = Field(min_length=1, max_length=64)
    gpu_count: StrictInt = Field(ge=1, le=64)


class SubmitRequest(_ClusterModel):
    """One training run to start.

    ``idempotency_key`` is what makes a retried or repeated submission start at most one run:
    the processor stores it before the first call and sends the same key every time after.
    """

    idempotency_key: str = Field(min_length=1, max_length=255)
    job_id: UUID
    dataset_url: str = Field(min_length=1)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    gpu_config: GpuConfig
    # Where the run's adapter and checkpoints go, with signed upload URLs: never a storage key.
    artifacts: ArtifactTargets | None = None

    @field_validator("hyperparameters")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > MAX_HYPERPARAMETERS_BYTES:
            raise ValueError(
                f"hyperparameters take {size} bytes as JSON; at most "
                f"{MAX_HYPERPARAMETERS_BYTES} are allowed"
            )
        return value


class SubmitResult(_ClusterModel):
    """The cluster's handle on a submitted run."""

    external_job_id: str = Field(min_length=1)
    status: ClusterJobState


class MetricsPoint(_ClusterModel):
    """The training metrics recorded at one optimizer step."""

    epoch: int = Field(ge=0)
    step: int = Field(ge=0)
    training_loss: float
    validation_loss: float | None = None
    learning_rate: float = Field(ge=0)
    throughput: float = Field(ge=0, description="tokens per second")
    # None where the run has no GPU to measure: never a made-up 0.
    gpu_utilization: float | None = Field(default=None, ge=0, le=100, description="percent")
    gpu_memory: float | None = Field(default=None, ge=0, description="gigabytes in use")
    recorded_at: AwareDatetime


class ClusterJobError(_ClusterModel):
    """Why a run failed, as the cluster tells it."""

    code: str
    message: str


class ClusterJobStatus(_ClusterModel):
    """A run's state at one poll.

    ``history`` holds every point recorded after the ``since_step`` the poll asked for, in step
    order, so that polling with the last step seen never loses a point; ``metrics`` is the latest
    point (also the last of ``history`` when the history is not empty).
    """

    status: ClusterJobState
    progress: float = Field(ge=0, le=100)
    current_epoch: int = Field(default=0, ge=0)
    total_epochs: int | None = Field(default=None, ge=1)
    current_step: int = Field(default=0, ge=0)
    total_steps: int | None = Field(default=None, ge=0)
    started_at: AwareDatetime | None = Field(
        default=None, description="when the run started training, by the cluster's clock"
    )
    ended_at: AwareDatetime | None = Field(
        default=None, description="when the run stopped, once it has ended"
    )
    metrics: MetricsPoint | None = None
    history: list[MetricsPoint] = Field(default_factory=list)
    error: ClusterJobError | None = None
    status_message: str | None = Field(
        default=None,
        max_length=1000,
        description="what the cluster says about the run's state, e.g. why it is still waiting",
    )
    artifact_uri: str | None = Field(
        default=None, description="where the trained adapter was stored, once completed"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # A report that contradicts itself is off contract: the processor must not store it.
        if self.total_steps is not None and self.current_step > self.total_steps:
            raise ValueError(
                f"current_step {self.current_step} is beyond total_steps {self.total_steps}"
            )
        if self.total_epochs is not None and self.current_epoch > self.total_epochs:
            raise ValueError(
                f"current_epoch {self.current_epoch} is beyond total_epochs {self.total_epochs}"
            )
        if self.started_at and self.ended_at and self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self


class CancelResult(_ClusterModel):
    """The cluster's answer to a cancel: the state the run is left in.

    ``status`` is ``cancelled`` when the cancel stopped the run (or will at its next step), and
    the run's own terminal state when it had already ended, e.g. ``completed`` for a run that
    finished before the cancel arrived.
    """

    external_job_id: str | None = None
    status: ClusterJobState
