"""What the API tests check answers against: the job's public fields and the error shape."""

from __future__ import annotations

# What the processor keeps for itself and the API never shows.
BOOKKEEPING = {
    "lease_owner",
    "lease_expires_at",
    "idempotency_key",
    "attempts",
    "next_poll_at",
    "cancel_delivered_at",
}
JOB_FIELDS = {
    "id",
    "user_id",
    "dataset_id",
    "status",
    "progress",
    "current_epoch",
    "total_epochs",
    "current_step",
    "total_steps",
    "current_metrics",
    "hyperparameters",
    "gpu_config",
    "estimated_total_cost",
    "current_cost",
    "final_cost",
    "external_job_id",
    "error_message",
    "artifact_location",
    "estimated_completion_at",
    "started_at",
    "completed_at",
    "run_started_at",
    "run_ended_at",
    "last_progress_at",
    "stalled_since",
    "lost_contact_since",
    "cancel_requested_at",
    "created_at",
    "updated_at",
}


def assert_error(response_json: dict[str, object], code: str) -> None:
    assert response_json["success"] is False
    assert set(response_json) == {"success", "error"}
    error = response_json["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
