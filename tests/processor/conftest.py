"""The processor against real parts: PostgreSQL with the migrations, the cluster simulator over
HTTP, and moto's S3 server holding the datasets in both buckets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from infra.local.s3 import LocalS3Server, demo_dataset_jsonl
from shared.cluster import RestTrainingCluster
from shared.config import ProcessorSettings
from shared.db import DirectDatabase
from shared.models import JobStatus
from shared.processor import CycleSummary, Processor
from shared.storage import S3DatasetStorage
from shared.training_events import ArtifactTargets
from tests.cluster.support import API_KEY, RecordingSleep, SimulatorControl
from tests.conftest import ClonedDatabase
from tests.factories import make_dataset, make_job, make_user

# 200 pairs, batch 8, 3 epochs: 75 steps.
DEMO_PAIRS = 200


@pytest.fixture(scope="session")
def s3(s3_server: LocalS3Server) -> Any:
    return s3_server.client()


@dataclass
class RecordingStorage:
    """The real S3 adapter, remembering what it signed so tests can look at the URLs."""

    inner: S3DatasetStorage
    signed: list[tuple[str | None, str, str]] = field(default_factory=list)

    def signed_url(self, bucket: str | None, path: str, expires_in: int = 86400) -> str:
        url = self.inner.signed_url(bucket, path, expires_in)
        self.signed.append((bucket, path, url))
        return url

    def upload_targets(self, user_id: uuid.UUID | str, job_id: uuid.UUID | str) -> ArtifactTargets:
        return self.inner.upload_targets(user_id, job_id)

    def adapter_download_urls(
        self, user_id: uuid.UUID | str, job_id: uuid.UUID | str, expires_in: int = 900
    ) -> dict[str, str]:
        return self.inner.adapter_download_urls(user_id, job_id, expires_in)


@dataclass
class Stack:
    """Everything one processor test needs, wired to the real servers."""

    test_db: ClonedDatabase
    admin: psycopg.Connection
    db: DirectDatabase
    sim: SimulatorControl
    storage: RecordingStorage
    s3: Any
    sleeps: RecordingSleep
    options: dict[str, Any]

    def settings(self, **overrides: Any) -> ProcessorSettings:
        """The processor's settings for a test: `poll_interval_seconds=0` stands for
        PROCESSOR_POLL_INTERVAL_SECONDS, and so on."""
        values = {**self.options, **overrides}
        return ProcessorSettings(
            processor_trust_platform_auth=True,
            **{f"processor_{name}": value for name, value in values.items()},
        )

    def processor(self, **overrides: Any) -> Processor:
        return Processor(self.db, self.cluster(), self.storage, self.settings(**overrides))

    def cluster(self, **kwargs: Any) -> RestTrainingCluster:
        settings = {"connect_timeout": 1.0, "read_timeout": 1.0, "max_attempts": 2, **kwargs}
        return RestTrainingCluster(self.sim.base_url, API_KEY, sleep=self.sleeps, **settings)

    def claim_polls(self, owner: uuid.UUID, **overrides: Any) -> list[dict[str, Any]]:
        """What `processor_claim_polls` hands a cycle with this owner."""
        settings = self.settings(**overrides)
        jobs: list[dict[str, Any]] = self.db.call(
            "processor_claim_polls",
            {
                "p_owner": owner,
                "p_limit": settings.processor_poll_batch_size,
                "p_lease_seconds": settings.lease_seconds,
                "p_settle_seconds": settings.processor_settle_seconds,
            },
        )
        return jobs

    def record_polls(
        self, owner: uuid.UUID, results: list[dict[str, Any]], **overrides: Any
    ) -> dict[str, Any]:
        """Call `processor_record_polls` as a cycle with this owner would."""
        settings = self.settings(**overrides)
        counts: dict[str, Any] = self.db.call(
            "processor_record_polls",
            {
                "p_owner": owner,
                "p_results": results,
                "p_poll_interval_seconds": settings.processor_poll_interval_seconds,
                "p_backoff_max_seconds": settings.processor_poll_backoff_max_seconds,
                "p_stall_factor": settings.processor_stall_factor,
                "p_stall_min_seconds": settings.processor_stall_min_seconds,
                "p_lost_contact_fail_seconds": settings.processor_lost_contact_fail_seconds,
            },
        )
        return counts

    def cycle(self, **overrides: Any) -> CycleSummary:
        processor = self.processor(**overrides)

        async def run() -> CycleSummary:
            try:
                return await processor.run_cycle()
            finally:
                await processor._cluster.aclose()

        return asyncio.run(run())

    def upload(self, bucket: str, body: bytes | None = None) -> str:
        path = f"{uuid.uuid4()}/train.jsonl"
        self.s3.put_object(Bucket=bucket, Key=path, Body=body or demo_dataset_jsonl(DEMO_PAIRS))
        return path

    def queued_job(
        self,
        *,
        bucket: str | None = "lora-datasets",
        user_id: uuid.UUID | None = None,
        path: str | None = None,
        **job: Any,
    ) -> uuid.UUID:
        user_id = user_id or make_user(self.admin)
        if path is None:
            path = self.upload(bucket or "lora-datasets")
        dataset_id = make_dataset(self.admin, user_id, bucket=bucket, path=path)
        return make_job(self.admin, user_id, dataset_id, **job)

    def job(self, job_id: uuid.UUID) -> dict[str, Any]:
        row = self.admin.execute(
            "select to_jsonb(j) from training_jobs j where id = %s", (job_id,)
        ).fetchone()
        assert row is not None
        result: dict[str, Any] = row[0]
        return result

    def status(self, job_id: uuid.UUID) -> JobStatus:
        return JobStatus(self.job(job_id)["status"])

    def run_until(
        self,
        done: Callable[[], bool],
        *,
        max_cycles: int = 60,
        pause: float = 0.05,
        **overrides: Any,
    ) -> list[CycleSummary]:
        """Run cycles until `done()` holds; fail after `max_cycles`."""
        summaries = []
        for _ in range(max_cycles):
            summaries.append(self.cycle(**overrides))
            if done():
                return summaries
            asyncio.run(asyncio.sleep(pause))
        raise AssertionError(f"not done after {max_cycles} cycles: {summaries[-1]}")

    def count(self, query: str, *params: Any) -> int:
        row = self.admin.execute(query, params).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def stack(
    test_db: ClonedDatabase, admin_conn: psycopg.Connection, sim: SimulatorControl, s3: Any
) -> Iterator[Stack]:
    db = DirectDatabase(test_db.app, min_size=1, max_size=4)
    storage = RecordingStorage(S3DatasetStorage(s3))
    options = {
        "time_budget_seconds": 30,
        "poll_interval_seconds": 0,
        "max_attempts": 3,
        "concurrency": 50,
        # Most tests are about one user's jobs; fairness tests set their own limits.
        "max_active_jobs_per_user": 1000,
    }
    yield Stack(test_db, admin_conn, db, sim, storage, s3, RecordingSleep(), options)
    db.close()
