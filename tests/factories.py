"""Rows for tests, written as the superuser so a test can arrange any state it needs.

Jobs reach a status the way real jobs do, one allowed transition at a time, so the state
machine trigger runs exactly as in production.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from shared.models import JobStatus

_PATH_TO: dict[JobStatus, list[JobStatus]] = {
    JobStatus.QUEUED: [],
    JobStatus.INITIALIZING: [JobStatus.INITIALIZING],
    JobStatus.RUNNING: [JobStatus.INITIALIZING, JobStatus.RUNNING],
    JobStatus.COMPLETED: [JobStatus.INITIALIZING, JobStatus.RUNNING, JobStatus.COMPLETED],
    JobStatus.FAILED: [JobStatus.INITIALIZING, JobStatus.FAILED],
    JobStatus.CANCELLED: [JobStatus.CANCELLED],
}


def make_user(conn: psycopg.Connection, email: str | None = None) -> uuid.UUID:
    user_id = uuid.uuid4()
    conn.execute(
        "insert into auth.users (id, email) values (%s, %s)",
        (user_id, email or f"{user_id.hex[:8]}@example.com"),
    )
    return user_id


def make_dataset(
    conn: psycopg.Connection,
    user_id: uuid.UUID,
    *,
    bucket: str | None = None,
    path: str = "data/train.jsonl",
    name: str = "Support replies",
) -> uuid.UUID:
    row = conn.execute(
        "insert into public.datasets (user_id, name, storage_bucket, storage_path, training_ready)"
        " values (%s, %s, %s, %s, true) returning id",
        (user_id, name, bucket, path),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def make_job(
    conn: psycopg.Connection,
    user_id: uuid.UUID,
    dataset_id: uuid.UUID | None = None,
    *,
    status: JobStatus = JobStatus.QUEUED,
    gpu_config: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> uuid.UUID:
    if dataset_id is None:
        dataset_id = make_dataset(conn, user_id)
    row = conn.execute(
        "insert into public.training_jobs (user_id, dataset_id, gpu_config, hyperparameters)"
        " values (%s, %s, %s, %s) returning id",
        (
            user_id,
            dataset_id,
            Jsonb(gpu_config or {"gpu_type": "A100", "gpu_count": 1}),
            Jsonb(hyperparameters or {"epochs": 3, "learning_rate": 0.0002}),
        ),
    ).fetchone()
    assert row is not None
    job_id = uuid.UUID(str(row[0]))
    for step in _PATH_TO[status]:
        set_status(conn, job_id, step)
    return job_id


def set_status(conn: psycopg.Connection, job_id: uuid.UUID, status: JobStatus) -> None:
    conn.execute(
        "update public.training_jobs set status = %s where id = %s", (status.value, job_id)
    )


def claims_for(user_id: uuid.UUID) -> dict[str, Any]:
    return {"sub": str(user_id), "role": "authenticated", "aud": "authenticated"}
