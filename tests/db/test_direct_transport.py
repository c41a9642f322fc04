"""The direct transport against the real database: roles, claims, RLS and errors."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from infra.local.postgres import free_port
from shared.db import DirectDatabase, UserContext
from shared.errors import DatabaseError, DatabaseUnavailable, InvalidValue
from shared.logs import FIELDS_ATTRIBUTE
from shared.models import JobStatus
from tests.conftest import ClonedDatabase
from tests.factories import claims_for, make_job, make_user
from tests.rows import TrainingJob


@pytest.fixture
def db(test_db: ClonedDatabase) -> Iterator[DirectDatabase]:
    # One connection, so consecutive calls share it: a leaked role or claim would show.
    database = DirectDatabase(test_db.app, min_size=1, max_size=1)
    yield database
    database.close()


def _user(user_id: uuid.UUID) -> UserContext:
    return UserContext(claims=claims_for(user_id), token="unused-by-direct")


def test_app_login_is_not_a_superuser(test_db: ClonedDatabase) -> None:
    """The functions log in as a role that cannot bypass RLS by itself."""
    with psycopg.connect(test_db.app) as conn:
        row = conn.execute(
            "select rolsuper, rolbypassrls from pg_roles where rolname = current_user"
        ).fetchone()
    if test_db.server.app_user is None:
        pytest.skip("DATABASE_URL given: the tests use that login")
    assert row == (False, False)


def test_owner_reads_their_job(admin_conn: psycopg.Connection, db: DirectDatabase) -> None:
    """The owner's call returns the job as JSON that the row model accepts."""
    owner = make_user(admin_conn)
    job_id = make_job(admin_conn, owner, status=JobStatus.RUNNING)
    data = db.call("get_training_job", {"p_job_id": job_id}, as_user=_user(owner))
    job = TrainingJob.model_validate(data)
    assert job.id == job_id
    assert job.status is JobStatus.RUNNING


def test_other_user_gets_nothing(admin_conn: psycopg.Connection, db: DirectDatabase) -> None:
    """RLS hides another user's job: the call answers None, as for a missing job."""
    owner, stranger = make_user(admin_conn), make_user(admin_conn)
    job_id = make_job(admin_conn, owner)
    assert db.call("get_training_job", {"p_job_id": job_id}, as_user=_user(stranger)) is None
    assert db.call("get_training_job", {"p_job_id": uuid.uuid4()}, as_user=_user(owner)) is None


def test_service_role_reads_any_job(admin_conn: psycopg.Connection, db: DirectDatabase) -> None:
    """A call without a user runs as service_role and sees every row."""
    job_id = make_job(admin_conn, make_user(admin_conn))
    assert db.call("get_training_job", {"p_job_id": str(job_id)})["id"] == str(job_id)


def test_identity_does_not_leak_between_calls(
    admin_conn: psycopg.Connection, db: DirectDatabase
) -> None:
    """On one pooled connection, a user call after another user's sees only its own rows, and a
    later service call is no longer that user (were Bob's role kept, it would see nothing)."""
    alice, bob = make_user(admin_conn), make_user(admin_conn)
    alices_job = make_job(admin_conn, alice)
    assert db.call("get_training_job", {"p_job_id": alices_job}, as_user=_user(alice))
    assert db.call("get_training_job", {"p_job_id": alices_job}, as_user=_user(bob)) is None
    assert db.call("get_training_job", {"p_job_id": alices_job}) is not None


def test_malformed_argument_gives_a_generic_error(
    admin_conn: psycopg.Connection, db: DirectDatabase
) -> None:
    """A value the database rejects becomes a DatabaseError without the database's text."""
    with pytest.raises(DatabaseError) as caught:
        db.call("get_training_job", {"p_job_id": "not-a-uuid"})
    assert "uuid" not in str(caught.value).lower()
    assert isinstance(caught.value.__cause__, psycopg.Error)


def _logged(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, object]]:
    return [
        getattr(record, FIELDS_ATTRIBUTE)
        for record in caplog.records
        if record.getMessage() == message
    ]


def test_failed_call_logs_what_the_database_said(
    admin_conn: psycopg.Connection, db: DirectDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused call logs the SQLSTATE, the database's message, detail, hint and context and the
    function's name, while the raised error carries the SQLSTATE and the function, never the
    database's text."""
    admin_conn.execute(
        "create function public.refuses_loudly() returns jsonb language plpgsql as $$"
        " begin raise exception 'the database says no' using errcode = 'P0001',"
        " detail = 'because of row 42', hint = 'ask again tomorrow'; end $$"
    )
    admin_conn.execute("grant execute on function public.refuses_loudly() to service_role")
    caplog.set_level(logging.INFO)

    with pytest.raises(DatabaseError) as caught:
        db.call("refuses_loudly")

    assert caught.value.sqlstate == "P0001"
    assert caught.value.function == "refuses_loudly"
    assert "says no" not in str(caught.value)
    [entry] = _logged(caplog, "database call failed")
    assert entry["function"] == "refuses_loudly"
    assert entry["sqlstate"] == "P0001"
    assert entry["db_message"] == "the database says no"
    assert entry["db_detail"] == "because of row 42"
    assert entry["db_hint"] == "ask again tomorrow"
    assert "refuses_loudly" in str(entry["db_context"])
    [record] = [r for r in caplog.records if r.getMessage() == "database call failed"]
    assert record.levelname == "ERROR"


def test_text_the_database_cannot_read_is_an_invalid_value(
    db: DirectDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLSTATE 22P02 (a value not in its type's text form) is the caller's mistake: an
    InvalidValue with our own message, the database's words only in the log."""
    caplog.set_level(logging.INFO)

    with pytest.raises(InvalidValue) as caught:
        db.call("get_training_job", {"p_job_id": "urn:uuid:not-really"})

    assert caught.value.sqlstate == "22P02"
    assert caught.value.function == "get_training_job"
    assert "urn" not in caught.value.message
    [entry] = _logged(caplog, "database call failed")
    assert entry["sqlstate"] == "22P02"
    assert "urn:uuid:not-really" in str(entry["db_message"])


def test_bad_function_name_is_refused_before_sql() -> None:
    """A name that is not a plain identifier never reaches SQL."""
    database = DirectDatabase(f"host=127.0.0.1 port={free_port()} dbname=x user=x", min_size=0)
    try:
        with pytest.raises(ValueError, match="invalid SQL function name"):
            database.call("get_training_job(); drop table x; --")
    finally:
        database.close()


def test_unreachable_database_is_unavailable() -> None:
    """A server that does not answer gives DatabaseUnavailable, not a driver error."""
    database = DirectDatabase(
        f"host=127.0.0.1 port={free_port()} dbname=x user=x connect_timeout=1",
        min_size=0,
        statement_timeout_seconds=1,
    )
    try:
        with pytest.raises(DatabaseUnavailable):
            database.call("get_training_job", {"p_job_id": uuid.uuid4()})
    finally:
        database.close()


def test_unreachable_database_is_logged_with_the_function(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A call that never reached the database is logged, naming the function and why, and the
    error says which function it was."""
    database = DirectDatabase(
        f"host=127.0.0.1 port={free_port()} dbname=x user=x connect_timeout=1",
        min_size=0,
        statement_timeout_seconds=1,
    )
    caplog.set_level(logging.INFO)
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            database.call("get_training_job", {"p_job_id": uuid.uuid4()})
    finally:
        database.close()

    assert caught.value.function == "get_training_job"
    assert caught.value.sqlstate is None
    [entry] = _logged(caplog, "database unreachable")
    assert entry["function"] == "get_training_job"
    assert entry["cause"]
