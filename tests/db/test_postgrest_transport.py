"""The PostgREST transport's requests, asserted against the shapes PostgREST expects.

Supabase's hosted REST API cannot run here, so respx stands in for it; each test checks the
request that would have reached it (URL, headers, body) and how its answers are mapped.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

import httpx
import pytest
import respx

from shared.db import PostgrestDatabase, UserContext
from shared.errors import (
    DatabaseError,
    DatabaseUnavailable,
    InvalidTransition,
    InvalidValue,
    PermissionDenied,
)
from shared.logs import FIELDS_ATTRIBUTE

SUPABASE_URL = "https://abcd1234.supabase.co"
RPC_URL = f"{SUPABASE_URL}/rest/v1/rpc/get_training_job"
SERVICE_KEY = "service-role-key"
ANON_KEY = "anon-key"


@pytest.fixture
def db() -> Iterator[PostgrestDatabase]:
    database = PostgrestDatabase(SUPABASE_URL + "/", service_key=SERVICE_KEY, anon_key=ANON_KEY)
    yield database
    database.close()


def _null_response() -> httpx.Response:
    """What PostgREST answers when a jsonb function returns NULL."""
    return httpx.Response(200, content=b"null", headers={"content-type": "application/json"})


def _user(token: str) -> UserContext:
    return UserContext(claims={"sub": str(uuid.uuid4()), "role": "authenticated"}, token=token)


@respx.mock
def test_user_call_sends_the_users_jwt_and_the_anon_key(db: PostgrestDatabase) -> None:
    """POST /rest/v1/rpc/<fn> with the user's JWT as Authorization, the anon key as apikey, and
    the arguments as a JSON object named like the function's parameters."""
    job_id = uuid.uuid4()
    route = respx.post(RPC_URL).mock(return_value=httpx.Response(200, json={"id": str(job_id)}))
    result = db.call("get_training_job", {"p_job_id": job_id}, as_user=_user("user.jwt.token"))
    assert result == {"id": str(job_id)}
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == RPC_URL
    assert request.headers["apikey"] == ANON_KEY
    assert request.headers["authorization"] == "Bearer user.jwt.token"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert json.loads(request.content) == {"p_job_id": str(job_id)}


@respx.mock
def test_service_call_sends_the_service_key(db: PostgrestDatabase) -> None:
    """A call without a user authenticates with the service-role key in both headers."""
    route = respx.post(RPC_URL).mock(return_value=_null_response())
    assert db.call("get_training_job", {"p_job_id": "x"}) is None
    request = route.calls.last.request
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["authorization"] == f"Bearer {SERVICE_KEY}"


@respx.mock
def test_each_call_carries_its_own_users_token(db: PostgrestDatabase) -> None:
    """Two users in a row: the second request does not carry the first user's token."""
    route = respx.post(RPC_URL).mock(return_value=_null_response())
    db.call("get_training_job", {"p_job_id": "a"}, as_user=_user("alice.token"))
    db.call("get_training_job", {"p_job_id": "b"}, as_user=_user("bob.token"))
    db.call("get_training_job", {"p_job_id": "c"})
    tokens = [call.request.headers["authorization"] for call in route.calls]
    assert tokens == ["Bearer alice.token", "Bearer bob.token", f"Bearer {SERVICE_KEY}"]


@respx.mock
def test_own_sqlstate_maps_to_its_error_with_its_message(db: PostgrestDatabase) -> None:
    """PostgREST's error body for our PT409 becomes InvalidTransition with the same message."""
    respx.post(RPC_URL).mock(
        return_value=httpx.Response(
            409,
            json={
                "code": "PT409",
                "message": "training job 1 is already completed; it cannot become cancelled",
                "details": None,
                "hint": "completed, failed and cancelled are final",
            },
        )
    )
    with pytest.raises(InvalidTransition, match="already completed"):
        db.call("get_training_job", {"p_job_id": "1"}, as_user=_user("t"))


@respx.mock
def test_token_refused_by_postgrest_is_permission_denied(db: PostgrestDatabase) -> None:
    """An expired JWT (PGRST303) is a PermissionDenied, and PostgREST's text is not passed on."""
    respx.post(RPC_URL).mock(
        return_value=httpx.Response(
            401,
            json={"code": "PGRST303", "message": "JWT expired", "details": None, "hint": None},
        )
    )
    with pytest.raises(PermissionDenied) as caught:
        db.call("get_training_job", {"p_job_id": "1"}, as_user=_user("t"))
    assert "JWT" not in str(caught.value)


@respx.mock
def test_unknown_database_error_is_generic(
    db: PostgrestDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """A database error we did not write ourselves does not leak its text: it is logged, with
    PostgREST's code, message, details and hint and the function, and the error carries the
    code and the function."""
    respx.post(RPC_URL).mock(
        return_value=httpx.Response(
            500,
            json={
                "code": "XX000",
                "message": "could not open relation with OID 1234",
                "details": "internal detail",
                "hint": "internal hint",
            },
        )
    )
    caplog.set_level(logging.INFO)
    with pytest.raises(DatabaseError) as caught:
        db.call("get_training_job", {"p_job_id": "x"})
    assert "OID" not in str(caught.value)
    assert caught.value.sqlstate == "XX000"
    assert caught.value.function == "get_training_job"
    [entry] = [
        getattr(record, FIELDS_ATTRIBUTE)
        for record in caplog.records
        if record.getMessage() == "database call failed"
    ]
    assert entry == {
        "function": "get_training_job",
        "sqlstate": "XX000",
        "error": "DatabaseError",
        "db_message": "could not open relation with OID 1234",
        "db_detail": "internal detail",
        "db_hint": "internal hint",
    }


@respx.mock
def test_text_the_database_cannot_read_is_an_invalid_value(db: PostgrestDatabase) -> None:
    """22P02 (a value not in its type's text form, here a uuid) is an InvalidValue, which the
    functions answer with 400, and the database's text about the value is not passed on."""
    respx.post(RPC_URL).mock(
        return_value=httpx.Response(
            400,
            json={
                "code": "22P02",
                "message": 'invalid input syntax for type uuid: "x"',
                "details": None,
                "hint": None,
            },
        )
    )
    with pytest.raises(InvalidValue) as caught:
        db.call("get_training_job", {"p_job_id": "x"})
    assert "uuid" not in str(caught.value)
    assert caught.value.sqlstate == "22P02"


@respx.mock
def test_unreachable_api_is_unavailable(db: PostgrestDatabase) -> None:
    """A connection failure is DatabaseUnavailable and is not retried (the call may write)."""
    route = respx.post(RPC_URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(DatabaseUnavailable):
        db.call("get_training_job", {"p_job_id": "x"})
    assert route.call_count == 1
