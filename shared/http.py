"""HTTP plumbing shared by the functions: JSON bodies, the error shape of DESIGN section 8, the
mapping from library errors to status codes, and for the user-facing functions CORS, ETags and
request parameters."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import traceback
from collections.abc import Callable, Collection, Sequence
from typing import Any

from flask import Request, Response

from shared.config import ApiSettings
from shared.errors import (
    AuthUnavailable,
    ClusterError,
    ConfigurationError,
    Conflict,
    DatabaseUnavailable,
    InvalidRequest,
    LoraRunnerError,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
)
from shared.logs import log_event

# What a browser may send cross-origin, and how long it may remember the preflight's answer.
CORS_ALLOW_HEADERS = "authorization, content-type, if-none-match"
CORS_MAX_AGE_SECONDS = 600

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_DIGITS = re.compile(r"[0-9]{1,10}")


def _encode(body: Any) -> bytes:
    return json.dumps(body, default=str, separators=(",", ":")).encode()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return _json_bytes_response(_encode(body), status, headers)


def _json_bytes_response(
    payload: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    response = Response(payload, status=status, mimetype="application/json")
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
    if isinstance(exc, InvalidRequest):
        return error_response(400, "bad_request", exc.message)
    if isinstance(exc, NotAuthenticated):
        challenge = 'Bearer error="invalid_token"' if exc.token_given else "Bearer"
        return error_response(401, "unauthorized", exc.message, {"WWW-Authenticate": challenge})
    if isinstance(exc, AuthUnavailable):
        log_event("token keys unavailable", severity="ERROR", error=repr(exc.__cause__))
        return error_response(503, "auth_unavailable", exc.message)
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


# --- the user-facing functions (get-job, cancel-job) ---------------------------------------------

Handler = Callable[[Request], Response]


def serve(
    request: Request,
    methods: Sequence[str],
    handler: Handler,
    settings: Callable[[], ApiSettings],
) -> Response:
    """Answer a browser-facing endpoint: CORS preflight, 405 for other methods, `handler` for the
    rest, every library error in the JSON error shape and anything unexpected as a bare 500, so
    no stack trace or driver message ever reaches a caller. HEAD is served as GET."""
    allowed = [*methods, "HEAD"] if "GET" in methods else list(methods)
    origins: Collection[str] = ()
    try:
        origins = settings().origins
        if request.method == "OPTIONS":
            response = _preflight(request, origins, allowed)
        elif request.method not in allowed:
            response = method_not_allowed(", ".join([*allowed, "OPTIONS"]))
        else:
            response = handler(request)
    except LoraRunnerError as exc:
        response = response_for_error(exc)
    except Exception as exc:  # noqa: BLE001 - the contract: a JSON 500, details only in the log
        log_event(
            "request failed",
            severity="ERROR",
            kind=type(exc).__name__,
            error=str(exc),
            traceback=traceback.format_exc(),
        )
        response = error_response(500, "internal", "Something went wrong on our side.")
    response.headers.update(_cors_headers(request, origins))
    return response


def _allowed_origin(request: Request, origins: Collection[str]) -> str | None:
    origin = request.headers.get("Origin")
    if not origin:
        return None
    if "*" in origins:
        return "*"
    return origin if origin.lower() in origins else None


def _cors_headers(request: Request, origins: Collection[str]) -> dict[str, str]:
    if not origins:
        return {}
    # The answer depends on the Origin header: caches must not hand one origin's to another.
    headers = {"Vary": "Origin"}
    allowed = _allowed_origin(request, origins)
    if allowed is not None:
        headers["Access-Control-Allow-Origin"] = allowed
        headers["Access-Control-Expose-Headers"] = "ETag"
    return headers


def _preflight(request: Request, origins: Collection[str], methods: Sequence[str]) -> Response:
    response = Response(status=204)
    response.headers["Allow"] = ", ".join([*methods, "OPTIONS"])
    if _allowed_origin(request, origins) is not None:
        response.headers["Access-Control-Allow-Methods"] = ", ".join([*methods, "OPTIONS"])
        response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_SECONDS)
    return response


def etag_response(request: Request, body: Any) -> Response:
    """200 with `body` and its ETag, or 304 when the caller's `If-None-Match` already names it.

    The ETag is a hash of the body itself, so it changes exactly when the answer does, whatever
    changed (a status, a new metric point, a cost record, another `max_points`).
    """
    payload = _encode(body)
    etag = '"' + hashlib.sha256(payload).hexdigest()[:32] + '"'
    if _etag_matches(request.headers.get("If-None-Match"), etag):
        response = Response(status=304)
        response.headers["ETag"] = etag
        response.headers["Cache-Control"] = "no-store"
        return response
    return _json_bytes_response(payload, headers={"ETag": etag})


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    # RFC 9110: If-None-Match compares weakly (a W/ prefix does not matter); * matches anything.
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


def job_id_from(request: Request, *, query_param: str | None = None) -> str:
    """The job id from the path (`/<job id>`) or, when `query_param` is given, the query."""
    from_path = request.path.strip("/")
    from_query = request.args.get(query_param) if query_param else None
    if from_path and from_query is not None and from_path != from_query:
        raise InvalidRequest("Give the job id once: in the path or in the query, not both.")
    job_id = from_path or from_query
    if not job_id:
        raise InvalidRequest("Say which job: add its id to the path, as /<job id>.")
    if not _UUID.fullmatch(job_id):
        raise InvalidRequest(
            "The job id must be a UUID, like 3f0c1a2b-0000-4000-8000-000000000000."
        )
    return job_id.lower()


def int_param(
    request: Request, name: str, *, default: int | None, minimum: int, maximum: int
) -> int | None:
    """A whole-number query parameter within [minimum, maximum], or `default` when absent."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise InvalidRequest(f"{name} must be a whole number from {minimum} to {maximum}.")
    return int(raw)
