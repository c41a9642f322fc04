"""Test set-up shared by every test: a real PostgreSQL with the real migrations.

A throwaway server is started for the session unless DATABASE_URL names one (a role that may
create databases). The bootstrap and migrations are applied once to a template database, and each
test gets its own clone of it (CREATE DATABASE ... TEMPLATE: milliseconds).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra.local import postgres
from infra.local.processes import ServerProcess, start_cluster_simulator
from infra.local.s3 import LocalS3Server, create_buckets
from tests.cluster.support import API_KEY, STEPS_PER_SECOND, SimulatorControl

# Read before scrubbing: the one variable a developer may point the tests at.
_GIVEN_DATABASE_URL = os.environ.get("DATABASE_URL")

# The project's own variables must not leak from a developer's shell into the tests.
for _name in list(os.environ):
    if _name.startswith(("SUPABASE_", "GPU_CLUSTER_", "S3_", "PROCESSOR_", "DB_")) or _name in {
        "DATABASE_URL",
        "CRON_SECRET",
        "ALLOWED_ORIGINS",
        "STORAGE_BACKEND",
    }:
        del os.environ[_name]


@dataclass(frozen=True)
class PgServer:
    """Where the test PostgreSQL is, and how to connect to a database on it."""

    admin_base: str
    app_user: str | None

    def admin(self, dbname: str = "postgres") -> str:
        return make_conninfo(self.admin_base, dbname=dbname)

    def app(self, dbname: str) -> str:
        """The conninfo the functions use: a non-superuser login that may only SET ROLE."""
        if self.app_user is None:
            return self.admin(dbname)
        return make_conninfo(self.admin_base, dbname=dbname, user=self.app_user)


@dataclass(frozen=True)
class ClonedDatabase:
    name: str
    admin: str
    app: str
    server: PgServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    if _GIVEN_DATABASE_URL:
        yield PgServer(admin_base=make_conninfo(_GIVEN_DATABASE_URL), app_user=None)
        return
    server = postgres.throwaway_cluster()
    server.start()
    try:
        yield PgServer(admin_base=server.conninfo(), app_user=postgres.APP_USER)
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def template_db(pg_server: PgServer) -> Iterator[str]:
    name = f"lora_template_{uuid.uuid4().hex[:8]}"
    postgres.create_database(pg_server.admin(), name)
    postgres.apply_schema(pg_server.admin(name))
    try:
        yield name
    finally:
        postgres.drop_database(pg_server.admin(), name)


@contextmanager
def cloned_database(
    pg_server: PgServer, template: str, prefix: str = "lora_test"
) -> Iterator[ClonedDatabase]:
    """A fresh copy of the migrated template database, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    postgres.create_database(pg_server.admin(), name, template=template)
    try:
        yield ClonedDatabase(
            name=name, admin=pg_server.admin(name), app=pg_server.app(name), server=pg_server
        )
    finally:
        postgres.drop_database(pg_server.admin(), name)


@pytest.fixture
def test_db(pg_server: PgServer, template_db: str) -> Iterator[ClonedDatabase]:
    with cloned_database(pg_server, template_db) as database:
        yield database


@pytest.fixture
def admin_conn(test_db: ClonedDatabase) -> Iterator[psycopg.Connection]:
    """A superuser connection to the test database, for arranging rows and looking at them."""
    with psycopg.connect(test_db.admin, autocommit=True) as conn:
        yield conn


def conninfo_param(conninfo: str, key: str) -> str:
    return str(conninfo_to_dict(conninfo)[key])


@pytest.fixture
def service_conn(test_db: ClonedDatabase) -> Iterator[psycopg.Connection]:
    """A connection acting as the processor does: logged in as the app user, as service_role."""
    with psycopg.connect(test_db.app, autocommit=True) as conn:
        conn.execute("set role service_role")
        yield conn


@pytest.fixture(scope="session")
def simulator() -> Iterator[ServerProcess]:
    """The cluster simulator, one process for the session, over real HTTP."""
    with start_cluster_simulator(
        api_key=API_KEY, steps_per_second=STEPS_PER_SECOND, init_seconds=0.0
    ) as server:
        yield server


@pytest.fixture
def sim(simulator: ServerProcess) -> Iterator[SimulatorControl]:
    """The simulator's control API, reset before and after the test (pace, faults, runs)."""
    control = SimulatorControl(simulator.base_url)
    control.reset()
    yield control
    control.reset()
    control.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3Server]:
    """moto's S3 server, over real HTTP, with every bucket the runner uses; one per session."""
    with LocalS3Server() as server:
        create_buckets(server.client())
        yield server
