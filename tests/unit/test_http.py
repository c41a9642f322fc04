"""The HTTP answers for errors that come from the database or from the server itself."""

from __future__ import annotations

import json

import pytest

from shared.errors import InvalidValue
from shared.http import response_for_error, status_error


def test_a_value_the_database_cannot_read_is_a_400() -> None:
    """InvalidValue (SQLSTATE 22P02) is the caller's mistake: 400 bad_request with our message,
    not a 500."""
    response = response_for_error(InvalidValue(sqlstate="22P02", function="get_job_detail"))

    assert response.status_code == 400
    body = json.loads(response.get_data())
    assert body == {
        "success": False,
        "error": {"code": "bad_request", "message": InvalidValue().message},
    }
    assert "22P02" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, "not_found"),
        (431, "headers_too_large"),
        (500, "internal"),
        (503, "service_unavailable"),
    ],
)
def test_statuses_the_server_chooses_get_a_code_and_a_message(status: int, code: str) -> None:
    """Every status the server or the framework may answer by itself has a stable code and a
    message for people, including one no table of ours lists."""
    assert status_error(status)[0] == code
    assert status_error(status)[1].endswith(".")
