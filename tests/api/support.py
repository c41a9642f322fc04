"""What the API tests check answers against: the job's public fields and the error shape, also
for answers read raw off the socket."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# What the processor keeps for itself and the API never shows.
BOOKKEEPING = {
    "lease_owner",
    "lease_expires_at",
    "idempotency_key",
    "attempts",
    "next_poll_at",
    "cancel_delivered_at",
}
JOB_FIELDS = {
    "id",
    "user_id",
    "dataset_id",
    "status",
    "progress",
    "current_epoch",
    "total_epochs",
    "current_step",
    "total_steps",
    "current_metrics",
    "hyperparameters",
    "gpu_config",
    "estimated_total_cost",
    "current_cost",
    "final_cost",
    "external_job_id",
    "error_message",
    "artifact_location",
    "estimated_completion_at",
    "started_at",
    "completed_at",
    "run_started_at",
    "run_ended_at",
    "last_progress_at",
    "stalled_since",
    "lost_contact_since",
    "status_message",
    "cancel_requested_at",
    "created_at",
    "updated_at",
}


def assert_error(response_json: dict[str, object], code: str) -> None:
    assert response_json["success"] is False
    assert set(response_json) == {"success", "error"}
    error = response_json["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]


@dataclass(frozen=True)
class RawAnswer:
    """An HTTP answer read off the socket as it came: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(base_url: str, request: bytes, *, timeout: float = 10.0) -> RawAnswer:
    """Send `request` byte for byte to the server at `base_url` and read one answer: for what no
    HTTP client would send (CR LF in a path, a malformed request line, oversized headers)."""
    url = urlsplit(base_url)
    assert url.hostname is not None
    assert url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return RawAnswer(int(status_line.split(" ")[1]), headers, body[:length])


# Requests the functions never see as such: the HTTP server or the framework answers them itself.
# Each must still get the JSON error shape, with the status the server chose.
MALFORMED_REQUESTS: dict[str, tuple[bytes, int]] = {
    # An encoded CR LF decodes into a path that matches no route of the framework's.
    "crlf-in-path": (b"GET /%0d%0a HTTP/1.1\r\nHost: test\r\n\r\n", 404),
    # functions-framework answers these two paths itself.
    "robots-txt": (b"GET /robots.txt HTTP/1.1\r\nHost: test\r\n\r\n", 404),
    "favicon": (b"GET /favicon.ico HTTP/1.1\r\nHost: test\r\n\r\n", 404),
    # gunicorn refuses a header over 8190 bytes, and more than 100 headers, before any app code.
    "header-over-8-kb": (
        b"GET / HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 9000 + b"\r\n\r\n",
        431,
    ),
    "too-many-headers": (
        b"GET / HTTP/1.1\r\nHost: test\r\n"
        + b"".join(b"X-Header-%d: 1\r\n" % i for i in range(120))
        + b"\r\n",
        431,
    ),
    "malformed-request-line": (b"GET / HTTP/1.1 trailing\r\nHost: test\r\n\r\n", 400),
    "invalid-method": (b"G@T / HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    "unknown-http-version": (b"GET / HTTP/9.9\r\nHost: test\r\n\r\n", 400),
    # The framework reads the whole body after the handler: a broken chunked body fails there.
    "broken-chunked-body": (
        b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        500,
    ),
}


def assert_json_error_answer(answer: RawAnswer, status: int) -> None:
    """The answer has the status and is the JSON error shape, never an HTML page."""
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json", answer
    body = answer.json()
    assert set(body) == {"success", "error"}, body
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str)
    assert body["error"]["code"]
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
