"""The contract between the processor and its SQL functions, and the boundaries that keep bad
rows out: one list of outcomes on both sides, no hidden defaults, bounded job input."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from shared.cluster import MAX_HYPERPARAMETERS_BYTES, ClusterJobStatus, SubmitRequest
from shared.processor_contract import PollOutcome, SubmissionOutcome
from tests.factories import make_dataset, make_job, make_user
from tests.processor.conftest import Stack


def test_sql_outcome_lists_match_the_python_enums(stack: Stack) -> None:
    """The outcomes the SQL functions accept are exactly the enums' values."""
    assert set(stack.db.call("processor_submission_outcomes")) == {
        o.value for o in SubmissionOutcome
    }
    assert set(stack.db.call("processor_poll_outcomes")) == {o.value for o in PollOutcome}


@pytest.mark.parametrize("outcome", ["Submitted", "sucess", None])
def test_an_unknown_submission_outcome_is_an_error(stack: Stack, outcome: str | None) -> None:
    """A typo in an outcome raises, naming it, instead of being silently ignored."""
    row: dict[str, Any] = {"job_id": str(uuid.uuid4())}
    if outcome is not None:
        row["outcome"] = outcome
    with pytest.raises(Exception, match="unknown processor outcome") as caught:
        stack.admin.execute(
            "select processor_record_submissions(%s, %s::jsonb, 3)",
            (uuid.uuid4(), json.dumps([row])),
        )
    assert isinstance(caught.value, psycopg.Error)
    assert caught.value.sqlstate == "22023"


def test_an_unknown_poll_outcome_is_an_error(stack: Stack) -> None:
    """The poll recorder refuses an outcome outside its list as well."""
    with pytest.raises(psycopg.Error, match="unknown processor outcome: done"):
        stack.admin.execute(
            "select processor_record_polls(%s, %s::jsonb, 10, 300, 10, 300, 3600)",
            (uuid.uuid4(), json.dumps([{"job_id": str(uuid.uuid4()), "outcome": "done"}])),
        )


def test_processor_sql_functions_take_no_defaults(stack: Stack) -> None:
    """Every tuning value comes from the processor's settings: no SQL function keeps a default
    of its own that could drift from them."""
    rows = stack.admin.execute(
        "select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname in ('public', 'lora_private') and p.pronargdefaults > 0"
        " and (p.proname like 'processor%' or p.proname like 'polls%'"
        "      or p.proname in ('record_cancels_delivered', 'get_job_detail'))"
    ).fetchall()
    assert rows == []


@pytest.mark.parametrize("gpu_count", ["2.0", "1.5", '"2"', "0", "65", "null"])
def test_the_schema_refuses_a_gpu_count_that_is_not_a_whole_number(
    admin_conn: psycopg.Connection, gpu_count: str
) -> None:
    """gpu_count 2.0, 1.5 or "2" never reaches the processor: the table refuses it."""
    user = make_user(admin_conn)
    dataset = make_dataset(admin_conn, user)
    with pytest.raises(psycopg.errors.CheckViolation):
        admin_conn.execute(
            "insert into training_jobs (user_id, dataset_id, gpu_config) values (%s, %s, %s)",
            (user, dataset, f'{{"gpu_type": "A100", "gpu_count": {gpu_count}}}'),
        )


def test_hyperparameters_are_bounded_the_same_on_both_sides(
    admin_conn: psycopg.Connection,
) -> None:
    """Hyperparameters over 64 KiB are refused by the table and by the submission model; just
    under the limit both accept them."""
    user = make_user(admin_conn)
    small = {"notes": "x" * (MAX_HYPERPARAMETERS_BYTES - 200)}
    large = {"notes": "x" * MAX_HYPERPARAMETERS_BYTES}
    make_job(admin_conn, user, hyperparameters=small)
    with pytest.raises(psycopg.errors.CheckViolation):
        make_job(admin_conn, user, hyperparameters=large)
    request: dict[str, Any] = {
        "idempotency_key": "k",
        "job_id": str(uuid.uuid4()),
        "dataset_url": "https://example.com/d.jsonl",
        "gpu_config": {"gpu_type": "A100", "gpu_count": 1},
    }
    SubmitRequest.model_validate({**request, "hyperparameters": small})
    with pytest.raises(ValidationError, match="at most 65536"):
        SubmitRequest.model_validate({**request, "hyperparameters": large})


@pytest.mark.parametrize(
    ("report", "problem"),
    [
        ({"total_epochs": 0}, "total_epochs"),
        ({"current_step": 31, "total_steps": 30}, "beyond total_steps"),
        ({"current_epoch": 4, "total_epochs": 3}, "beyond total_epochs"),
        (
            {"started_at": "2026-01-01T10:00:00Z", "ended_at": "2026-01-01T09:00:00Z"},
            "before started_at",
        ),
    ],
)
def test_a_self_contradicting_cluster_report_is_refused_at_the_boundary(
    report: dict[str, Any], problem: str
) -> None:
    """Reports that once poisoned whole batches are off contract: the client refuses them
    before they reach the database."""
    with pytest.raises(ValidationError, match=problem):
        ClusterJobStatus.model_validate({"status": "running", "progress": 10, **report})
