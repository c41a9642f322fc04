"""What the processor sends to a GPU cluster and what it gets back, whatever the backend.

These types are the processor's side of every cluster adapter: an adapter translates them to and
from its own wire format. The REST contract (DESIGN §6) happens to use the same field names, so
:class:`~shared.cluster.rest.RestTrainingCluster` validates the cluster's JSON straight into them.

Unknown fields in a cluster's answers are ignored so that a cluster may add fields without
breaking older runners.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


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


class _ClusterModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class GpuConfig(_ClusterModel):
    """The hardware a run asks for."""

    gpu_type: str = Field(min_length=1)
    gpu_count: int = Field(default=1, ge=1)


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
    gpu_utilization: float = Field(ge=0, le=100, description="percent")
    gpu_memory: float = Field(ge=0, description="gigabytes in use")
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
    total_epochs: int | None = Field(default=None, ge=0)
    current_step: int = Field(default=0, ge=0)
    total_steps: int | None = Field(default=None, ge=0)
    metrics: MetricsPoint | None = None
    history: list[MetricsPoint] = Field(default_factory=list)
    error: ClusterJobError | None = None
    artifact_uri: str | None = Field(
        default=None, description="where the trained adapter was stored, once completed"
    )
