"""HTTP plumbing shared by the functions: JSON bodies, the error shape of DESIGN section 8, and
the mapping from library errors to status codes."""

from __future__ import annotations

import hmac
import json
from typing import Any

from flask import Request, Response

from shared.errors import (
    ClusterError,
    ConfigurationError,
    Conflict,
    DatabaseUnavailable,
    LoraRunnerError,
    NotFound,
    PermissionDenied,
)
from shared.logs import log_event


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(
        json.dumps(body, default=str, separators=(",", ":")),
        status=status,
        mimetype="application/json",
    )
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return json_response(
        {"success": False, "error": {"code": code, "message": message}}, status, headers
    )


def method_not_allowed(allowed: str) -> Response:
    return error_response(
        405, "method_not_allowed", f"Use {allowed} for this endpoint.", {"Allow": allowed}
    )


def response_for_error(exc: LoraRunnerError) -> Response:
    """The HTTP answer for a library error; the message is one we wrote, never a driver's."""
    if isinstance(exc, NotFound):
        return error_response(404, "not_found", exc.message)
    if isinstance(exc, Conflict):
        return error_response(409, "conflict", exc.message)
    if isinstance(exc, PermissionDenied):
        return error_response(403, "forbidden", exc.message)
    if isinstance(exc, DatabaseUnavailable):
        return error_response(503, "database_unavailable", exc.message)
    if isinstance(exc, ClusterError):
        return error_response(502, "cluster_error", exc.message)
    if isinstance(exc, ConfigurationError):
        log_event("configuration error", severity="ERROR", error=exc.message)
        return error_response(500, "misconfigured", "The service is not configured correctly.")
    log_event("request failed", severity="ERROR", error=exc.message, kind=type(exc).__name__)
    return error_response(500, "internal", "Something went wrong on our side.")


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def secret_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so the secret cannot be guessed byte by byte from timings."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
