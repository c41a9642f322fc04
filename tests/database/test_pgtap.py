"""Runs the pgTAP suite under supabase/tests/database with pg_prove, one pytest case per file.

The same files run against a Supabase project with `supabase test db`, which runs them in name
order on one database; here each file gets a fresh clone of the migrated template database, with
the shared helpers file (which commits its `tests` schema) run before it, as that order would.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ClonedDatabase, conninfo_param

PGTAP_DIR = Path(__file__).resolve().parents[2] / "supabase" / "tests" / "database"
HELPERS = PGTAP_DIR / "000-test-helpers.sql"
PGTAP_FILES = sorted(p for p in PGTAP_DIR.glob("*.sql") if p != HELPERS)


def test_pgtap_suite_exists() -> None:
    """The RLS suite is there to run (a missing folder would silently test nothing)."""
    assert PGTAP_FILES, f"no pgTAP files in {PGTAP_DIR}"
    assert HELPERS.exists()


@pytest.mark.parametrize("path", PGTAP_FILES, ids=[p.name for p in PGTAP_FILES])
def test_pgtap_file(path: Path, test_db: ClonedDatabase) -> None:
    """Every pgTAP assertion in the file passes under pg_prove."""
    pg_prove = shutil.which("pg_prove")
    assert pg_prove, "pg_prove is missing: run `make deps` (libtap-parser-sourcehandler-pgtap-perl)"
    with psycopg.connect(test_db.admin, autocommit=True) as conn:
        conn.execute("create extension if not exists pgtap")
    result = subprocess.run(
        [
            pg_prove,
            "--verbose",
            "--host",
            conninfo_param(test_db.admin, "host"),
            "--port",
            conninfo_param(test_db.admin, "port"),
            "--username",
            conninfo_param(test_db.admin, "user"),
            "--dbname",
            test_db.name,
            str(HELPERS),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"pg_prove failed for {path.name}:\n{output}"
    assert "All tests successful" in result.stdout, result.stdout
