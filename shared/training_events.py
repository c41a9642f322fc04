"""What the trainer is told and what it tells back: the job spec it runs, and the events it prints.

This module is the one definition of both, shared by the trainer (``trainer/``, which runs on the
cluster) and the Ray adapter (``shared/cluster/ray.py``, which runs in the cloud function and
reads the trainer's log). It imports pydantic only: no torch, so a function bundle can carry it.

The trainer prints one event per line on stdout, as ``EVENT_PREFIX`` followed by the event's JSON,
so that anything else a library prints on the same stream is told apart and skipped. Every event
carries the schema version ``v``; a reader refuses a version it does not know rather than
guessing.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SCHEMA_VERSION: Literal[1] = 1
EVENT_PREFIX = "LORA_EVENT "


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- the job spec ---------------------------------------------------------------------------------


class ArtifactTargets(_Strict):
    """Where the trainer puts what it produces, without any storage credentials of its own.

    ``upload_urls`` maps a file's path under the job's artifact location (``adapter/...`` for
    the final adapter, ``checkpoint/...`` for the latest checkpoint) to a signed URL that takes
    one HTTP ``PUT`` of that file; ``location`` is how the job records that place
    (``s3://bucket/<user id>/<job id>/``)."""

    location: str = Field(min_length=1)
    upload_urls: dict[str, str] = Field(default_factory=dict)


ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
"""The files of a saved PEFT adapter the trainer uploads, under ``adapter/`` and
``checkpoint/``."""
ADAPTER_DIR = "adapter/"
"""Where the final adapter goes, under a run's artifact location."""
CHECKPOINT_DIR = "checkpoint/"
"""Where the latest checkpoint goes, under a run's artifact location."""


class TrainerSpec(_Strict):
    """One training run, as the cluster hands it to ``python -m trainer``."""

    v: Literal[1] = SCHEMA_VERSION
    job_id: str = Field(min_length=1)
    dataset_url: str = Field(min_length=1)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    artifacts: ArtifactTargets | None = None


# --- the events -----------------------------------------------------------------------------------


class _Event(_Strict):
    v: Literal[1] = SCHEMA_VERSION
    time: AwareDatetime


class StartedEvent(_Event):
    """Training has begun: the data and the model are loaded."""

    type: Literal["started"] = "started"
    total_steps: int = Field(ge=1)
    total_epochs: int = Field(ge=1)
    base_model: str
    trainable_parameters: int = Field(ge=0)
    training_examples: int = Field(ge=1)
    validation_examples: int = Field(ge=0)


class StepEvent(_Event):
    """One optimizer step. ``validation_loss`` is set on the steps where the validation set was
    evaluated (every N steps and at each epoch's end); the GPU figures are ``None`` where there
    is no GPU to measure, never a made-up 0."""

    type: Literal["step"] = "step"
    step: int = Field(ge=1)
    epoch: int = Field(ge=0)
    training_loss: float
    validation_loss: float | None = None
    learning_rate: float = Field(ge=0)
    tokens_per_second: float = Field(ge=0)
    gpu_utilization: float | None = Field(default=None, ge=0, le=100)
    gpu_memory_gb: float | None = Field(default=None, ge=0)


class CheckpointEvent(_Event):
    """A checkpoint of the adapter was saved (and uploaded, where uploads were given)."""

    type: Literal["checkpoint"] = "checkpoint"
    step: int = Field(ge=0)
    uploaded: bool


class CompletedEvent(_Event):
    """The run finished; the final adapter is at ``artifact_uri`` (None when no upload target
    was given)."""

    type: Literal["completed"] = "completed"
    step: int = Field(ge=0)
    artifact_uri: str | None = None
    validation_loss: float | None = None


class FailedEvent(_Event):
    """The run stopped on an error. ``code`` is one of a few stable words (``dataset_invalid``,
    ``dataset_unavailable``, ``model_unavailable``, ``non_finite_loss``, ``upload_failed``,
    ``invalid_hyperparameters``, ``invalid_spec``, ``internal``); ``message`` says it for a
    person."""

    type: Literal["failed"] = "failed"
    code: str = Field(min_length=1)
    message: str = Field(min_length=1)
    step: int | None = Field(default=None, ge=0)


class CancelledEvent(_Event):
    """The run was asked to stop (SIGTERM) and stopped at a step boundary, after uploading what
    it had."""

    type: Literal["cancelled"] = "cancelled"
    step: int = Field(ge=0)


TrainingEvent = Annotated[
    StartedEvent | StepEvent | CheckpointEvent | CompletedEvent | FailedEvent | CancelledEvent,
    Field(discriminator="type"),
]
_EVENT: TypeAdapter[TrainingEvent] = TypeAdapter(TrainingEvent)


class UnreadableEvent(ValueError):
    """A line carries the event prefix but is not a valid event of this schema."""


def encode_event(event: BaseModel) -> str:
    """The line the trainer prints for an event (without the newline)."""
    return EVENT_PREFIX + event.model_dump_json()


def parse_event_line(line: str) -> TrainingEvent | None:
    """The event on a log line; None for a line that is not an event (other output).

    Raises :class:`UnreadableEvent` for a line that claims to be an event but is not one of this
    schema (a newer version, a broken line)."""
    if not line.startswith(EVENT_PREFIX):
        return None
    payload = line[len(EVENT_PREFIX) :].strip()
    try:
        raw = json.loads(payload)
    except ValueError as exc:
        raise UnreadableEvent(f"an event line that is not JSON: {payload[:80]!r}") from exc
    if isinstance(raw, dict) and raw.get("v") != SCHEMA_VERSION:
        raise UnreadableEvent(
            f"event schema version {raw.get('v')!r}; this reader knows {SCHEMA_VERSION}"
        )
    try:
        return _EVENT.validate_python(raw)
    except ValidationError as exc:
        raise UnreadableEvent(f"an event line off the schema: {exc.errors()[0]['msg']}") from exc
