"""get-job and cancel-job answer every request in the JSON error shape, including the requests
that the HTTP server (gunicorn) or the framework (Flask under functions-framework) answers before
the function's own code runs, sent raw over a socket to the functions as Cloud Functions serves
them."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api
from tests.api.support import MALFORMED_REQUESTS, assert_json_error_answer, raw_request


@pytest.mark.parametrize("function", ["get-job", "cancel-job"])
@pytest.mark.parametrize(
    ("request_bytes", "status"), MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS.keys()
)
def test_malformed_requests_get_the_json_error_shape(
    api: Api, function: str, request_bytes: bytes, status: int
) -> None:
    """A path no route matches, the framework's own 404s, oversized or too many headers, a
    malformed request line and a broken chunked body each get their status with the JSON error
    shape, not an HTML page or plain text."""
    base_url = api.get_job_url if function == "get-job" else api.cancel_job_url

    answer = raw_request(base_url, request_bytes)

    assert_json_error_answer(answer, status)
    assert answer.headers["cache-control"] == "no-store"


def test_a_crash_around_the_handler_still_signals_the_platform(api: Api) -> None:
    """The 500 for a failure outside the handler keeps functions-framework's X-Google-Status
    header, which tells the platform the function crashed."""
    request_bytes, status = MALFORMED_REQUESTS["broken-chunked-body"]

    answer = raw_request(api.get_job_url, request_bytes)

    assert_json_error_answer(answer, status)
    assert answer.headers["x-google-status"] == "crash"
