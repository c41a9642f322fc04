"""The two stores `make dev` fills with demo data: PostgreSQL (migrations + seed) and S3 (moto).

Each ``start_*`` function registers what stops its store on the caller's exit stack as soon as
there is something to stop, so a failure half-way leaves nothing running once the stack closes.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from infra.local import postgres
from infra.local import s3 as local_s3
from infra.local.dev_settings import HOST, REPO
from infra.local.processes import ServerProcess
from shared.storage import create_s3_client

DBNAME = "lora_dev"
# The seed's demo user (supabase/seed.sql): the printed URL signs in as this user.
DEMO_USER_ID = "00000000-0000-4000-8000-00000000d3e0"
DEMO_USER_EMAIL = "demo@example.com"
_HEALTH_POLL_SECONDS = 0.1


def start_database(server: postgres.LocalPostgres, stack: contextlib.ExitStack) -> list[str]:
    """Start `server` with a fresh `lora_dev` database; the demo user's job ids.

    The database is dropped and created again, then gets the Supabase bootstrap, every
    migration and the seed (a demo user, a dataset in each bucket and a queued job on each).
    """
    server.start()
    stack.callback(server.stop)
    postgres.drop_database(server.conninfo(), DBNAME)
    postgres.create_database(server.conninfo(), DBNAME)
    postgres.apply_schema(server.conninfo(DBNAME), seed=True)
    with psycopg.connect(server.conninfo(DBNAME)) as conn:
        rows = conn.execute(
            "select id::text from training_jobs where user_id = %s order by created_at, id",
            (DEMO_USER_ID,),
        ).fetchall()
    return [row[0] for row in rows]


def start_s3(port: int, log_path: Path, stack: contextlib.ExitStack) -> ServerProcess:
    """moto's S3 server on `port`, once the demo dataset is in both buckets; logs to `log_path`."""
    endpoint = f"http://{HOST}:{port}"
    log = stack.enter_context(log_path.open("wb"))
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local.s3", "--port", str(port), "--seed"],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = ServerProcess("S3 (moto)", process, endpoint)
    stack.callback(server.stop)
    client = create_s3_client(
        endpoint_url=endpoint,
        region=local_s3.LOCAL_REGION,
        access_key_id=local_s3.LOCAL_ACCESS_KEY_ID,
        secret_access_key=local_s3.LOCAL_SECRET_ACCESS_KEY,
        max_attempts=1,
    )

    def seeded() -> bool:
        # Ready once the demo dataset is in both buckets, not merely once the port answers.
        for bucket, path in local_s3.DEMO_DATASET_PATHS.items():
            try:
                client.head_object(Bucket=bucket, Key=path)
            except (BotoCoreError, ClientError):
                return False
        return True

    _wait_until(seeded, server, log_path)
    return server


def _wait_until(
    ready: Callable[[], bool], server: ServerProcess, log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited while starting:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} was not ready within {timeout:g} s; see {log}")
        time.sleep(_HEALTH_POLL_SECONDS)


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""
