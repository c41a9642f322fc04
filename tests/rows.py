"""Rows of the database as pydantic models: what tests read rows into, and what the schema test
holds the tables to (a column added to a table without its field here fails that test)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared.models import DEFAULT_BUCKET, JobStatus


class _Row(BaseModel):
    # Rows come from the database, which may grow columns before this code does.
    model_config = ConfigDict(extra="ignore", frozen=True)


class GpuConfig(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    gpu_type: str = Field(min_length=1, max_length=40)
    gpu_count: int = Field(ge=1, le=64)


class GpuPrice(_Row):
    gpu_type: str
    hourly_rate: Decimal
    currency: str = "USD"
    updated_at: datetime | None = None
    max_active_jobs: int | None = None
    training_pairs_per_second: Decimal = Decimal(1)
    startup_seconds: int = 300


class UserJobLimit(_Row):
    user_id: UUID
    max_active_jobs: int
    plan: str | None = None
    updated_at: datetime


class Dataset(_Row):
    id: UUID
    user_id: UUID
    name: str
    description: str | None = None
    storage_bucket: str | None = None
    storage_path: str
    file_size_bytes: int | None = None
    training_ready: bool = False
    total_training_pairs: int | None = None
    created_at: datetime
    updated_at: datetime | None = None

    @property
    def bucket(self) -> str:
        """The bucket the file lives in: NULL means the default, `lora-datasets`."""
        return self.storage_bucket or DEFAULT_BUCKET


class TrainingJob(_Row):
    id: UUID
    user_id: UUID
    dataset_id: UUID
    status: JobStatus
    progress: Decimal = Decimal(0)
    current_epoch: int = 0
    total_epochs: int | None = None
    current_step: int = 0
    total_steps: int | None = None
    current_metrics: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    gpu_config: GpuConfig
    estimated_total_cost: Decimal | None = None
    current_cost: Decimal = Decimal(0)
    final_cost: Decimal | None = None
    external_job_id: str | None = None
    error_message: str | None = None
    artifact_location: str | None = None
    estimated_completion_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    run_started_at: datetime | None = None
    run_ended_at: datetime | None = None
    run_settled_at: datetime | None = None
    lost_contact_since: datetime | None = None
    status_message: str | None = None
    stalled_since: datetime | None = None
    created_at: datetime
    updated_at: datetime
    idempotency_key: UUID | None = None
    attempts: int = 0
    lease_owner: UUID | None = None
    lease_expires_at: datetime | None = None
    next_poll_at: datetime | None = None
    last_progress_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    cancel_delivered_at: datetime | None = None


class MetricsPoint(_Row):
    job_id: UUID
    step: int = Field(ge=0)
    epoch: int = Field(default=0, ge=0)
    training_loss: float | None = None
    validation_loss: float | None = None
    learning_rate: float | None = None
    throughput: float | None = Field(default=None, ge=0)
    gpu_utilization: float | None = Field(default=None, ge=0, le=100)
    gpu_memory: float | None = Field(default=None, ge=0)
    recorded_at: datetime


class CostRecord(_Row):
    id: UUID
    user_id: UUID
    job_id: UUID | None
    cost_type: str
    amount: Decimal
    currency: str = "USD"
    billing_period: str
    details: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class Notification(_Row):
    id: UUID
    user_id: UUID
    job_id: UUID | None = None
    type: str
    title: str
    message: str
    priority: str = "normal"
    read: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)
    dedupe_key: str | None = None
    created_at: datetime
