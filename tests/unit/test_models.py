"""The job status and row models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.models import ALLOWED_TRANSITIONS, JobStatus
from tests.rows import Dataset, GpuConfig


def test_terminal_statuses_allow_no_transition() -> None:
    """Nothing leaves completed, failed or cancelled."""
    for status in JobStatus:
        assert status.is_terminal == (not ALLOWED_TRANSITIONS[status])
    assert {s for s in JobStatus if s.is_terminal} == {
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    }


def test_every_active_status_can_be_cancelled() -> None:
    """Cancel is allowed from any non-terminal status."""
    for status in JobStatus:
        assert status.can_become(JobStatus.CANCELLED) == status.is_active


def test_happy_path_is_allowed_and_skipping_is_not() -> None:
    """queued -> initializing -> running -> completed, with no shortcut."""
    assert JobStatus.QUEUED.can_become(JobStatus.INITIALIZING)
    assert JobStatus.INITIALIZING.can_become(JobStatus.RUNNING)
    assert JobStatus.RUNNING.can_become(JobStatus.COMPLETED)
    assert not JobStatus.QUEUED.can_become(JobStatus.RUNNING)
    assert not JobStatus.QUEUED.can_become(JobStatus.COMPLETED)
    assert not JobStatus.INITIALIZING.can_become(JobStatus.COMPLETED)


def test_dataset_without_bucket_lives_in_lora_datasets() -> None:
    """A NULL storage_bucket means the default bucket."""
    base = {
        "id": uuid.uuid4(),
        "user_id": uuid.uuid4(),
        "name": "d",
        "storage_path": "a/b.jsonl",
        "created_at": datetime.now(UTC),
    }
    assert Dataset(**base).bucket == "lora-datasets"
    assert Dataset(**base, storage_bucket="training-files").bucket == "training-files"


def test_gpu_config_is_validated() -> None:
    """A GPU count outside 1..64 is refused."""
    assert GpuConfig(gpu_type="A100", gpu_count=2).gpu_count == 2
    with pytest.raises(ValidationError):
        GpuConfig(gpu_type="A100", gpu_count=0)
