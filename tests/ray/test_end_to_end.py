"""The data plane whole: a job goes from queued to completed through the processor, on a local
Ray head, with the real trainer on a tiny model, and its adapter comes back through get-job."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from infra.local.processes import start_function
from infra.local.s3 import (
    LOCAL_ACCESS_KEY_ID,
    LOCAL_SECRET_ACCESS_KEY,
    LocalS3Server,
    demo_dataset_jsonl,
)
from shared.cluster import RayJobsCluster
from shared.config import ProcessorSettings
from shared.db import DirectDatabase
from shared.processor import Processor
from shared.storage import S3DatasetStorage
from shared.training_events import ADAPTER_FILES, StepEvent, parse_event_line
from tests.api.tokens import JWT_SECRET, hs256_token, user_claims
from tests.conftest import ClonedDatabase
from tests.factories import make_dataset, make_job, make_user
from tests.ray.conftest import TOKEN

REPO = Path(__file__).resolve().parents[2]
TRAINER = "python -m trainer --device cpu"
DEADLINE_SECONDS = 240


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.tiny_model import build

    return build(tmp_path_factory.mktemp("tiny-model"))


def _run_until_ended(
    make_processor: Any, cluster_url: str, admin: psycopg.Connection, job_id: uuid.UUID
) -> None:
    """Cycles, each with a cluster client of its own, as each call of the function has."""

    async def cycle() -> None:
        async with RayJobsCluster(cluster_url, TOKEN, entrypoint=TRAINER, tail_lines=200) as ray:
            await make_processor(ray).run_cycle()

    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        asyncio.run(cycle())
        row = admin.execute("select status from training_jobs where id = %s", (job_id,)).fetchone()
        assert row is not None
        if row[0] in {"completed", "failed", "cancelled"}:
            return
        time.sleep(1)
    raise AssertionError(f"the job had not ended after {DEADLINE_SECONDS} s")


def _step_events(ray_head: Any, submission_id: str) -> list[StepEvent]:
    response = httpx.get(
        f"{ray_head.dashboard_url}/api/jobs/{submission_id}/logs",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    response.raise_for_status()
    events = [parse_event_line(line) for line in response.json()["logs"].splitlines()]
    return [event for event in events if isinstance(event, StepEvent)]


def test_a_job_trains_on_ray_and_its_adapter_comes_back_through_get_job(
    ray_head: Any,
    tiny_model: Path,
    test_db: ClonedDatabase,
    admin_conn: psycopg.Connection,
    s3_server: LocalS3Server,
    tmp_path: Path,
) -> None:
    """queued -> completed on a real Ray head with the real trainer: the stored metrics are
    exactly the trainer's step events, the validation loss falls, and the adapter downloaded
    through get-job's signed URLs loads with peft."""
    s3 = s3_server.client()
    path = f"{uuid.uuid4()}/train.jsonl"
    s3.put_object(Bucket="lora-datasets", Key=path, Body=demo_dataset_jsonl(160))
    user_id = make_user(admin_conn)
    dataset_id = make_dataset(admin_conn, user_id, bucket="lora-datasets", path=path)
    job_id = make_job(
        admin_conn,
        user_id,
        dataset_id,
        hyperparameters={
            "base_model": str(tiny_model),
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 0.003,
            "max_seq_length": 128,
            "eval_every_steps": 6,
            "checkpoint_every_steps": 12,
            "seed": 7,
        },
    )

    db = DirectDatabase(test_db.app, min_size=1, max_size=2)
    settings = ProcessorSettings(
        processor_trust_platform_auth=True,
        processor_poll_interval_seconds=0,
        processor_time_budget_seconds=60,
    )
    storage = S3DatasetStorage(s3)
    try:
        _run_until_ended(
            lambda ray: Processor(db, ray, storage, settings),
            ray_head.dashboard_url,
            admin_conn,
            job_id,
        )
    finally:
        db.close()

    job = admin_conn.execute(
        "select status, error_message, external_job_id, artifact_location, current_step,"
        " total_steps from training_jobs where id = %s",
        (job_id,),
    ).fetchone()
    assert job is not None
    status, error, external_job_id, artifact_location, current_step, total_steps = job
    assert status == "completed", error
    assert artifact_location == f"storage://lora-artifacts/{user_id}/{job_id}/adapter/"
    assert current_step == total_steps

    events = _step_events(ray_head, external_job_id)
    assert [e.step for e in events] == list(range(1, total_steps + 1))
    points = admin_conn.execute(
        "select step, epoch, training_loss, validation_loss, learning_rate, throughput,"
        " gpu_utilization, gpu_memory from metrics_points where job_id = %s order by step",
        (job_id,),
    ).fetchall()
    assert points == [
        (
            e.step,
            e.epoch,
            e.training_loss,
            e.validation_loss,
            e.learning_rate,
            e.tokens_per_second,
            e.gpu_utilization,
            e.gpu_memory_gb,
        )
        for e in events
    ]
    validation = [e.validation_loss for e in events if e.validation_loss is not None]
    assert len(validation) >= 3
    assert validation[-1] < validation[0]

    env = {
        "DATABASE_URL": test_db.app,
        "SUPABASE_JWT_SECRET": JWT_SECRET,
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": s3_server.endpoint_url,
        "S3_ACCESS_KEY_ID": LOCAL_ACCESS_KEY_ID,
        "S3_SECRET_ACCESS_KEY": LOCAL_SECRET_ACCESS_KEY,
    }
    token = hs256_token(user_claims(user_id))
    with start_function(REPO / "functions" / "get_job" / "main.py", "get_job", env=env) as server:
        answer = httpx.get(
            f"{server.base_url}/{job_id}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    assert answer.status_code == 200, answer.text
    adapter = answer.json()["data"]["adapter"]
    assert set(adapter["files"]) == set(ADAPTER_FILES)
    downloaded = tmp_path / "adapter"
    downloaded.mkdir()
    for name, url in adapter["files"].items():
        body = httpx.get(url, timeout=30)
        assert body.status_code == 200
        (downloaded / name).write_bytes(body.content)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), downloaded)
    assert any("lora_" in name for name, _ in loaded.named_parameters())
