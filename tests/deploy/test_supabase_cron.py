"""The opt-in Supabase Cron schedule of the processor (supabase/cron/), run on a real PostgreSQL.

pg_cron, pg_net and Supabase Vault are replaced by stand-ins that record their arguments
(supabase_cron_stand_ins.sql): Debian's pg_cron 1.4 has no second schedules, and pg_net and Vault
are not packaged for Debian. Executing the scheduled command against them shows the exact HTTP
call pg_net would make.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import ClonedDatabase

CRON_DIR = Path(__file__).resolve().parents[2] / "supabase" / "cron"
SCHEDULE = (CRON_DIR / "schedule_processor.sql").read_text()
UNSCHEDULE = (CRON_DIR / "unschedule_processor.sql").read_text()
STAND_INS = (Path(__file__).with_name("supabase_cron_stand_ins.sql")).read_text()

PROCESSOR_URL = "https://process-training-jobs-abc123-ew.a.run.app"
CRON_SECRET = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def db(test_db: ClonedDatabase) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A database with the stand-ins, connected as the superuser the SQL editor runs as."""
    with psycopg.connect(test_db.admin, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(STAND_INS)
        yield conn


def store_vault_secrets(db: psycopg.Connection[dict[str, Any]]) -> None:
    db.execute("select vault.create_secret(%s, 'processor_url', 'URL')", (PROCESSOR_URL,))
    db.execute("select vault.create_secret(%s, 'processor_cron_secret', 'secret')", (CRON_SECRET,))


def jobs(db: psycopg.Connection[dict[str, Any]]) -> list[dict[str, Any]]:
    return db.execute("select jobname, schedule, command from cron.job").fetchall()


def run_job(db: psycopg.Connection[dict[str, Any]], command: str) -> dict[str, Any]:
    """Run the job's command as pg_cron would, and return the request pg_net was handed."""
    db.execute(command)
    request = db.execute("select * from net.requests order by id desc limit 1").fetchone()
    assert request is not None
    return request


def test_schedule_posts_to_the_processor_every_30_seconds_with_the_vault_secret(
    db: psycopg.Connection[dict[str, Any]],
) -> None:
    """The script schedules one named job every 30 seconds whose run POSTs to the URL stored
    in Vault with `Authorization: Bearer <cron secret from Vault>`."""
    store_vault_secrets(db)
    db.execute(SCHEDULE)
    [job] = jobs(db)
    assert job["jobname"] == "process-training-jobs"
    assert job["schedule"] == "30 seconds"
    request = run_job(db, job["command"])
    assert request["url"] == PROCESSOR_URL
    assert request["headers"]["Authorization"] == f"Bearer {CRON_SECRET}"
    assert request["headers"]["Content-Type"] == "application/json"
    # Long enough for a whole cycle (45 s budget), unlike pg_net's default.
    assert request["timeout_milliseconds"] >= 45_000


def test_the_secret_is_read_on_every_run_and_never_stored_in_the_job(
    db: psycopg.Connection[dict[str, Any]],
) -> None:
    """cron.job holds no secret, and a secret rotated in Vault is used by the next run without
    rescheduling."""
    store_vault_secrets(db)
    db.execute(SCHEDULE)
    [job] = jobs(db)
    assert CRON_SECRET not in job["command"]
    assert PROCESSOR_URL not in job["command"]
    db.execute(
        "select vault.update_secret(id, 'rotated-secret') from vault.decrypted_secrets "
        "where name = 'processor_cron_secret'"
    )
    assert run_job(db, job["command"])["headers"]["Authorization"] == "Bearer rotated-secret"


def test_scheduling_twice_keeps_one_job(db: psycopg.Connection[dict[str, Any]]) -> None:
    """Running the schedule script again replaces the job instead of adding a second caller."""
    store_vault_secrets(db)
    db.execute(SCHEDULE)
    db.execute(SCHEDULE)
    assert len(jobs(db)) == 1


def test_unschedule_removes_the_job_and_tolerates_none(
    db: psycopg.Connection[dict[str, Any]],
) -> None:
    """The removal script leaves no schedule behind, keeps other jobs, and is harmless to run
    again."""
    store_vault_secrets(db)
    db.execute("select cron.schedule('someone-else', '5 minutes', 'select 1')")
    db.execute(SCHEDULE)
    db.execute(UNSCHEDULE)
    assert [job["jobname"] for job in jobs(db)] == ["someone-else"]
    db.execute(UNSCHEDULE)
    assert [job["jobname"] for job in jobs(db)] == ["someone-else"]


def test_schedule_refuses_without_the_vault_secrets(
    db: psycopg.Connection[dict[str, Any]],
) -> None:
    """Without the secrets in Vault the script stops, naming what is missing and how to store
    it, and schedules nothing."""
    db.execute("select vault.create_secret(%s, 'processor_url', 'URL')", (PROCESSOR_URL,))
    with pytest.raises(psycopg.errors.RaiseException) as raised:
        db.execute(SCHEDULE)
    assert "processor_cron_secret" in str(raised.value)
    assert "processor_url" not in str(raised.value).split("\n")[0]
    assert raised.value.diag.message_hint is not None
    assert "vault.create_secret" in raised.value.diag.message_hint
    assert jobs(db) == []
