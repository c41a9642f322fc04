"""`make dev CLUSTER=ray`: the local system with a Ray head, whose demo jobs train for real."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from infra.local.dev_settings import DevSettings
from infra.local.dev_stack import DevStack

DEADLINE_SECONDS = 180


@pytest.fixture(scope="module")
def ray_stack() -> Iterator[DevStack]:
    root = Path(tempfile.mkdtemp(prefix="lora-runner-dev-ray-"))
    os.chmod(root, 0o755)  # noqa: S103 - PostgreSQL runs as `postgres` under root
    settings = DevSettings(
        pg_port=0,
        s3_port=0,
        cluster_port=0,
        processor_port=0,
        get_job_port=0,
        cancel_job_port=0,
        web_port=0,
        scheduler_interval_seconds=1.0,
        cluster="ray",
        root=root,
    )
    try:
        with DevStack(settings, out=io.StringIO()) as stack:
            yield stack
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _jobs(stack: DevStack) -> list[dict[str, Any]]:
    with psycopg.connect(stack.admin_conninfo) as conn:
        rows = conn.execute(
            "select to_jsonb(j) from training_jobs j where id = any(%s)", (stack.demo_job_ids,)
        ).fetchall()
    return [row[0] for row in rows]


def test_the_demo_jobs_train_for_real_and_offer_their_adapter(ray_stack: DevStack) -> None:
    """Both demo jobs complete on the local Ray head with falling validation loss, and get-job
    offers each one's adapter for download."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while any(j["status"] not in {"completed", "failed", "cancelled"} for j in _jobs(ray_stack)):
        assert time.monotonic() < deadline, _jobs(ray_stack)
        time.sleep(1)
    token = ray_stack.access_token()
    for job in _jobs(ray_stack):
        assert job["status"] == "completed", job["error_message"]
        answer = httpx.get(
            f"{ray_stack.urls['get-job']}/{job['id']}",
            headers={"Authorization": f"Bearer {token}"},
            params={"max_points": 5000},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        validation = [p["validation_loss"] for p in data["metrics"] if p["validation_loss"]]
        assert len(validation) >= 3
        assert validation[-1] < validation[0]
        assert [p["step"] for p in data["metrics"]] == list(range(1, job["total_steps"] + 1))
        files = data["adapter"]["files"]
        assert httpx.get(files["adapter_config.json"], timeout=30).json()["peft_type"] == "LORA"
