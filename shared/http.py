"""HTTP plumbing shared by the functions: JSON bodies, the error shape of docs/architecture.md
("The HTTP API"), the mapping from library errors to status codes, every answer in that shape
(the server's and the framework's own included), and for the user-facing functions CORS, ETags
and request parameters."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
from collections.abc import Callable, Collection, Sequence
from http import HTTPStatus
from typing import Any

from flask import Flask, Request, Response, current_app, has_app_context
from flask.logging import default_handler
from werkzeug.exceptions import HTTPException, InternalServerError

from shared.config import ApiSettings
from shared.errors import (
    AuthUnavailable,
    ClusterError,
    ConfigurationError,
    Conflict,
    DatabaseError,
    DatabaseUnavailable,
    InvalidRequest,
    InvalidValue,
    LoraRunnerError,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
)
from shared.logs import configure_logging, log_event

# What a browser may send cross-origin, and how long it may remember the preflight's answer.
CORS_ALLOW_HEADERS = "authorization, content-type, if-none-match"
CORS_MAX_AGE_SECONDS = 600

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_DIGITS = re.compile(r"[0-9]{1,10}")

_INTERNAL = "Something went wrong on our side."


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
    if isinstance(exc, InvalidRequest | InvalidValue):
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
    where: dict[str, Any] = (
        {"sqlstate": exc.sqlstate, "function": exc.function}
        if isinstance(exc, DatabaseError)
        else {}
    )
    log_event(
        "request failed", severity="ERROR", error=exc.message, kind=type(exc).__name__, **where
    )
    return error_response(500, "internal", _INTERNAL)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def secret_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so the secret cannot be guessed byte by byte from timings."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


# --- every answer in the error shape -----------------------------------------------------------

# What the server and the framework answer on their own, in our words: a status the functions
# never choose themselves gets its code and message here.
_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is not valid HTTP."),
    403: ("forbidden", "This request is not allowed."),
    404: ("not_found", "Nothing is served at this path."),
    405: ("method_not_allowed", "This endpoint does not take that method."),
    413: ("payload_too_large", "The request body is too large."),
    414: ("uri_too_long", "The request's URL is too long."),
    417: ("expectation_failed", "The request's Expect header cannot be met."),
    431: ("headers_too_large", "The request's headers are too large."),
    500: ("internal", _INTERNAL),
    501: ("not_implemented", "The request needs something this server does not do."),
}


def status_error(status: int) -> tuple[str, str]:
    """The error code and message for an answer of `status` that no handler of ours wrote."""
    if status in _STATUS_ERRORS:
        return _STATUS_ERRORS[status]
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_"), phrase + "."


def set_up_function() -> None:
    """Prepare this function's process; each `functions/*/main.py` calls it once, at import.

    Log records of every origin go through the one JSON formatter, and every answer is in the
    JSON error shape, including those no handler of ours sees: the framework's (a path that
    matches no route, such as one with an encoded CR LF; functions-framework's own 404 for
    /robots.txt and /favicon.ico; its text 500 when something fails around the handler) and the
    HTTP server's (gunicorn refuses headers over 8 KB, malformed request lines and the like
    before any application code runs, with an HTML page of its own).
    """
    configure_logging()
    # functions-framework imports main.py inside its Flask app's context: that app serves it.
    if has_app_context():
        _json_framework_errors(current_app)
    _json_server_errors()


def _json_framework_errors(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_exception_response)
    # Replaces functions-framework's own 500 handler (a text body), keeping its signal to the
    # platform that the function crashed.
    app.register_error_handler(InternalServerError, _crash_response)
    # Flask's own handler would write "Exception on ..." as plain text on stderr.
    app.logger.removeHandler(default_handler)


def _http_exception_response(exc: HTTPException) -> Response:
    status = exc.code or 500
    code, message = status_error(status)
    response = error_response(status, code, message)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _crash_response(exc: InternalServerError) -> Response:
    response = error_response(500, "internal", _INTERNAL)
    response.headers["X-Google-Status"] = "crash"
    return response


def _json_server_errors() -> None:
    """Make gunicorn answer the requests it refuses itself in the JSON error shape.

    functions-framework runs gunicorn with settings of its own and no way to change its error
    page, which gunicorn writes with `gunicorn.util.write_error`; so that function is replaced,
    here, before the server starts its workers.
    """
    try:
        from gunicorn import util  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - the dev server, or a platform without gunicorn
        return
    if getattr(util.write_error, "_json_errors", False):
        return

    def write_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
        code, message = status_error(int(status_int))
        body = _encode({"success": False, "error": {"code": code, "message": message}})
        head = (
            f"HTTP/1.1 {int(status_int)} {reason}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            "Cache-Control: no-store\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        util.write_nonblock(sock, head.encode("latin-1") + body)

    write_error._json_errors = True  # type: ignore[attr-defined]
    util.write_error = write_error


# --- serving a function --------------------------------------------------------------------------

Handler = Callable[[Request], Response]


def serve(
    request: Request,
    methods: Sequence[str],
    handler: Handler,
    settings: Callable[[], ApiSettings] | None = None,
) -> Response:
    """Answer one request: 405 for a method not in `methods`, `handler` for the rest, every
    library error in the JSON error shape and anything unexpected as a bare 500, so no stack
    trace or driver message ever reaches a caller. HEAD is served as GET.

    With `settings` (the browser-facing functions) CORS preflights are answered and CORS headers
    added; without (the processor, called by a scheduler) OPTIONS is one more method not taken.
    """
    allowed = [*methods, "HEAD"] if "GET" in methods else list(methods)
    advertised = [*allowed, "OPTIONS"] if settings is not None else allowed
    origins: Collection[str] = ()
    try:
        if settings is not None:
            origins = settings().origins
        if request.method == "OPTIONS" and settings is not None:
            response = _preflight(request, origins, allowed)
        elif request.method not in allowed:
            response = method_not_allowed(", ".join(advertised))
        else:
            response = handler(request)
    except LoraRunnerError as exc:
        response = response_for_error(exc)
    except Exception as exc:  # noqa: BLE001 - the contract: a JSON 500, details only in the log
        log_event(
            "request failed",
            severity="ERROR",
            exc_info=True,
            kind=type(exc).__name__,
            error=str(exc),
        )
        response = error_response(500, "internal", _INTERNAL)
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


def etag_response(
    request: Request, body: dict[str, Any], *, fresh: dict[str, Any] | None = None
) -> Response:
    """200 with `body` and its ETag, or 304 when the caller's `If-None-Match` already names it.

    The ETag is a hash of the body itself, so it changes exactly when the answer does, whatever
    changed (a status, a new metric point, a cost record, another `max_points`). `fresh` holds
    parts that differ on every request without the resource changing (signed URLs): they go into
    the 200's `data` but not into the hash, so an unchanged job still gets its 304.
    """
    etag = '"' + hashlib.sha256(_encode(body)).hexdigest()[:32] + '"'
    if _etag_matches(request.headers.get("If-None-Match"), etag):
        response = Response(status=304)
        response.headers["ETag"] = etag
        response.headers["Cache-Control"] = "no-store"
        return response
    if fresh:
        body = {**body, "data": {**body["data"], **fresh}}
    return _json_bytes_response(_encode(body), headers={"ETag": etag})


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
