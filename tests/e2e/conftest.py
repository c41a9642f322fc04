"""Browser tests of the monitor page against the stack `make dev` runs.

The same orchestrator (`infra.local.dev.DevStack`) is started once for these tests, on free ports,
with a simulator fast enough that a run takes seconds. Debian's Chromium (installed by `make deps`)
is driven by Playwright; no browser is ever downloaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, LiteralString

import psycopg
import pytest
from playwright.sync_api import Browser, Page, Request, sync_playwright

from infra.local import s3 as local_s3
from infra.local.dev import DEMO_USER_ID, DevSettings, DevStack
from shared.storage import create_s3_client

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    # This machine has no network beyond loopback: Chromium's own connections only fail slowly.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
# The page polls every second here instead of every five: same code path, shorter tests.
POLL_SECONDS = 1.0
# A seeded-size run (200 pairs, batch 8, 3 epochs: 75 steps) takes 7.5 s: a few polls to watch.
STEPS_PER_SECOND = 10.0
# The hyperparameters of the jobs arranged past the queue (held running, completed).
HELD_PARAMS = {"epochs": 3, "batch_size": 8, "learning_rate": 2e-4}


@contextlib.contextmanager
def dev_root() -> Iterator[Path]:
    """A fresh folder for a stack's database and logs, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="lora-runner-e2e-"))
    # PostgreSQL runs as `postgres` when the tests run as root: it must reach its folder.
    os.chmod(root, 0o755)  # noqa: S103
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="package")
def dev_stack() -> Iterator[DevStack]:
    with dev_root() as root, DevStack(_fast_settings(root), out=io.StringIO()) as stack:
        yield stack


def _fast_settings(root: Path) -> DevSettings:
    return DevSettings(
        pg_port=0,
        s3_port=0,
        cluster_port=0,
        processor_port=0,
        get_job_port=0,
        cancel_job_port=0,
        web_port=0,
        scheduler_interval_seconds=0.5,
        steps_per_second=STEPS_PER_SECOND,
        init_seconds=0.5,
        root=root,
    )


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make deps` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Monitor:
    """A browser tab on the monitor page, counting the requests it sends to get-job."""

    page: Page
    stack: DevStack
    get_job_requests: list[Request] = field(default_factory=list)

    def open(self, job_id: str, *, token: str | None = None) -> None:
        self.page.goto(self.stack.monitor_url(job_id, token=token, poll_seconds=POLL_SECONDS))

    def field(self, name: str) -> Any:
        return self.page.locator(f'[data-field="{name}"]')

    def chart_points(self, chart: str = "loss") -> int:
        value = self.page.locator(f'[data-chart="{chart}"]').get_attribute("data-points")
        return int(value or 0)

    def screenshot(self, name: str) -> Path:
        OUTPUT.mkdir(exist_ok=True)
        path = OUTPUT / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def monitor(browser: Browser, dev_stack: DevStack) -> Iterator[Monitor]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    monitor = Monitor(page, dev_stack)
    get_job = dev_stack.urls["get-job"]

    def count(request: Request) -> None:
        # GETs only: whether a CORS preflight shows up here is the browser's business.
        if request.method == "GET" and request.url.startswith(get_job):
            monitor.get_job_requests.append(request)

    page.on("request", count)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield monitor
    context.close()
    assert errors == [], f"the page raised: {errors}"


@dataclass
class DemoData:
    """Rows of the demo user's, arranged straight in the database as the frontend would."""

    conninfo: str
    job_ids: list[str] = field(default_factory=list)

    def dataset_id(self, bucket: str) -> str:
        row = self._one(
            "select id::text from datasets where user_id = %s"
            " and coalesce(storage_bucket, 'lora-datasets') = %s",
            (DEMO_USER_ID, bucket),
        )
        return str(row[0])

    def queue_job(
        self,
        *,
        bucket: str = "lora-datasets",
        epochs: int = 3,
        batch_size: int = 8,
        gpu_type: str = "A100",
        gpu_count: int = 1,
        **hyperparameters: Any,
    ) -> str:
        """A queued job on the demo dataset in `bucket`; the scheduler picks it up at once."""
        params = {"epochs": epochs, "batch_size": batch_size, "learning_rate": 2e-4}
        params.update(hyperparameters)
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return self._insert_job(conn, bucket, epochs, params, gpu_type, gpu_count)

    def _insert_job(
        self,
        conn: psycopg.Connection[Any],
        bucket: str,
        epochs: int,
        params: dict[str, Any],
        gpu_type: str,
        gpu_count: int,
    ) -> str:
        row = conn.execute(
            "insert into training_jobs"
            " (user_id, dataset_id, total_epochs, hyperparameters, gpu_config)"
            " values (%s, %s, %s, %s, %s) returning id::text",
            (
                DEMO_USER_ID,
                self.dataset_id(bucket),
                epochs,
                json.dumps(params),
                json.dumps({"gpu_type": gpu_type, "gpu_count": gpu_count}),
            ),
        ).fetchone()
        assert row is not None
        self.job_ids.append(str(row[0]))
        return str(row[0])

    def held_running_job(self, *, gpu_type: str = "A100") -> str:
        """A running job on a run the processor will not ask about for a day, arranged in one
        transaction so that the scheduler never sees it queued: it holds one of the demo user's
        active slots until a test ends it."""
        with psycopg.connect(self.conninfo) as conn, conn.transaction():
            job_id = self._insert_job(conn, "lora-datasets", 3, HELD_PARAMS, gpu_type, 1)
            conn.execute(
                "update training_jobs set status = 'initializing',"
                " next_poll_at = now() + interval '1 day' where id = %s",
                (job_id,),
            )
            conn.execute(
                "update training_jobs set status = 'running', external_job_id = 'held-run-' || id,"
                " run_started_at = now(), total_steps = 75 where id = %s",
                (job_id,),
            )
        return job_id

    def completed_job(
        self, *, gpu_type: str = "A100", run: timedelta = timedelta(minutes=20), adapter: bool
    ) -> str:
        """A job whose run of `run` completed at the cluster just now, settled, so the processor
        leaves it alone; arranged in one transaction, as `held_running_job`. With `adapter` its
        `artifact_location` is where its own run stores the adapter
        (`storage://lora-artifacts/<user id>/<job id>/adapter/`); see `upload_adapter`."""
        with psycopg.connect(self.conninfo) as conn, conn.transaction():
            job_id = self._insert_job(conn, "lora-datasets", 3, HELD_PARAMS, gpu_type, 1)
            conn.execute(
                "update training_jobs set status = 'initializing',"
                " next_poll_at = now() + interval '1 day' where id = %s",
                (job_id,),
            )
            conn.execute(
                "update training_jobs set status = 'running', external_job_id = 'done-run-' || id,"
                " started_at = now() - %s::interval, run_started_at = now() - %s::interval,"
                " total_steps = 75 where id = %s",
                (run, run, job_id),
            )
            location = f"storage://lora-artifacts/{DEMO_USER_ID}/{job_id}/adapter/"
            conn.execute(
                "update training_jobs set status = 'completed', run_ended_at = now(),"
                " run_settled_at = now(), current_step = 75, current_epoch = 3,"
                " artifact_location = %s where id = %s",
                (location if adapter else None, job_id),
            )
        return job_id

    def cancel_others(self) -> None:
        """Cancel the demo user's active jobs this test did not arrange (the seed's, still
        running early on), so that the user's active jobs are counted from zero."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(
                "update training_jobs set status = 'cancelled' where user_id = %s"
                " and status in ('queued', 'initializing', 'running') and id <> all(%s::uuid[])",
                (DEMO_USER_ID, self.job_ids),
            )

    def cancel(self, job_id: str) -> None:
        """Cancel one job, as its owner would."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("update training_jobs set status = 'cancelled' where id = %s", (job_id,))

    @contextlib.contextmanager
    def gpu_capacity(self, gpu_type: str, capacity: int) -> Iterator[None]:
        """`gpu_prices.max_active_jobs` of `gpu_type` set to `capacity` for a while."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            row = conn.execute(
                "select max_active_jobs from gpu_prices where gpu_type = %s", (gpu_type,)
            ).fetchone()
            assert row is not None, gpu_type
            conn.execute(
                "update gpu_prices set max_active_jobs = %s where gpu_type = %s",
                (capacity, gpu_type),
            )
            try:
                yield
            finally:
                conn.execute(
                    "update gpu_prices set max_active_jobs = %s where gpu_type = %s",
                    (row[0], gpu_type),
                )

    def cancel_unfinished(self) -> None:
        """Cancel this test's jobs still active, so they load no later test."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(
                "update training_jobs set status = 'cancelled' where id = any(%s::uuid[])"
                " and status in ('queued', 'initializing', 'running')",
                (self.job_ids,),
            )

    def idle_job(
        self,
        *,
        steps_done: int,
        total_steps: int,
        idle: timedelta,
        cost: float = 0.0,
        stalled_for: timedelta | None = None,
        lost_contact_for: timedelta | None = None,
    ) -> str:
        """A job running for a while whose steps stopped `idle` ago, on a cluster the processor
        will not ask about for a day: nothing moves it while a test looks at it. It has cost `cost`
        so far; its warnings are set as the processor sets them (see `set_warnings`)."""
        job_id = self.queue_job()
        with psycopg.connect(self.conninfo) as conn, conn.transaction():
            conn.execute(
                "update training_jobs set status = 'initializing',"
                " next_poll_at = now() + interval '1 day' where id = %s",
                (job_id,),
            )
            conn.execute(
                "update training_jobs set status = 'running', external_job_id = 'idle-run-' || id,"
                " started_at = now() - 2 * %s::interval, run_started_at = now() - 2 * %s::interval,"
                " last_progress_at = now() - %s::interval,"
                " current_step = %s, total_steps = %s, current_epoch = 1, current_cost = %s,"
                " progress = round(100.0 * %s / %s, 2) where id = %s",
                (idle, idle, idle, steps_done, total_steps, cost, steps_done, total_steps, job_id),
            )
        self.set_warnings(job_id, stalled_for=stalled_for, lost_contact_for=lost_contact_for)
        return job_id

    def set_warnings(
        self,
        job_id: str,
        *,
        stalled_for: timedelta | None = None,
        lost_contact_for: timedelta | None = None,
    ) -> None:
        """The processor's verdicts on a job: stalled since `stalled_for` ago (the processor
        dates a stall from the last step), out of contact with the cluster since
        `lost_contact_for` ago; None clears one, as progress or a good poll would."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(
                "update training_jobs set stalled_since = now() - %s::interval,"
                " lost_contact_since = now() - %s::interval where id = %s",
                (stalled_for, lost_contact_for, job_id),
            )

    def set_status_message(self, job_id: str, message: str | None) -> None:
        """What the cluster says about the job's run, as the processor records it."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(
                "update training_jobs set status_message = %s where id = %s", (message, job_id)
            )

    def job(self, job_id: str) -> dict[str, Any]:
        row = self._one("select to_jsonb(j) from training_jobs j where id = %s", (job_id,))
        result: dict[str, Any] = row[0]
        return result

    def count_points(self, job_id: str) -> int:
        row = self._one("select count(*) from metrics_points where job_id = %s", (job_id,))
        return int(row[0])

    def _one(self, query: LiteralString, params: tuple[Any, ...]) -> tuple[Any, ...]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            row = conn.execute(query, params).fetchone()
        assert row is not None, query
        return row


def upload_adapter(stack: DevStack, job_id: str, files: dict[str, bytes]) -> None:
    """Store `files` in the stack's S3 where the demo user's job `job_id` keeps its adapter,
    as the trainer's uploads would: `lora-artifacts/<user id>/<job id>/adapter/<name>`."""
    client: Any = create_s3_client(
        endpoint_url=stack.urls["s3"],
        region=local_s3.LOCAL_REGION,
        access_key_id=local_s3.LOCAL_ACCESS_KEY_ID,
        secret_access_key=local_s3.LOCAL_SECRET_ACCESS_KEY,
    )
    for name, body in files.items():
        client.put_object(
            Bucket="lora-artifacts", Key=f"{DEMO_USER_ID}/{job_id}/adapter/{name}", Body=body
        )


@pytest.fixture
def demo(dev_stack: DevStack) -> Iterator[DemoData]:
    data = DemoData(dev_stack.admin_conninfo)
    yield data
    data.cancel_unfinished()
