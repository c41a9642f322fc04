"""What get-job and cancel-job write to their logs: one JSON entry per line, with what a failed
database call was about, served by functions-framework as in production."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.local import postgres
from infra.local.processes import ServerProcess, start_function
from tests.api.conftest import GET_JOB_SOURCE
from tests.api.support import assert_error
from tests.api.tokens import JWT_SECRET, hs256_token, user_claims


@pytest.fixture
def function_log(tmp_path: Path) -> Path:
    return tmp_path / "get-job.log"


@pytest.fixture
def get_job_without_database(function_log: Path) -> Iterator[ServerProcess]:
    """get-job pointed at a database port nothing listens on, with a short timeout."""
    env = {
        "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{postgres.free_port()}/none",
        "DB_TIMEOUT_SECONDS": "1",
        "SUPABASE_JWT_SECRET": JWT_SECRET,
    }
    with (
        function_log.open("wb") as log,
        start_function(GET_JOB_SOURCE, "get_job", env=env, stdout=log) as server,
    ):
        yield server


def test_unreachable_database_is_logged_with_the_sql_function(
    get_job_without_database: ServerProcess, function_log: Path
) -> None:
    """A 503 for an unreachable database leaves a structured ERROR entry naming the SQL function
    that could not be called, and every line of the log is such a JSON entry."""
    token = hs256_token(user_claims(uuid.uuid4()))

    response = httpx.get(
        f"{get_job_without_database.base_url}/{uuid.uuid4()}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )

    assert response.status_code == 503, response.text
    assert_error(response.json(), "database_unavailable")
    entries = [json.loads(line) for line in function_log.read_text().splitlines()]
    assert all(entry["severity"] for entry in entries)
    [entry] = [e for e in entries if e["message"] == "database unreachable"]
    assert entry["severity"] == "ERROR"
    assert entry["function"] == "get_job_detail"
    assert entry["cause"]
