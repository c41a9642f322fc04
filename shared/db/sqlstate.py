"""From a database error to the library's, the same on both transports.

The caller learns only what we wrote (our own SQLSTATEs carry messages written for users); the
log gets everything the database said: its SQLSTATE, message, detail and hint, and the SQL
function that was called. The raised error carries `sqlstate` and `function` as attributes, so a
caller can log them next to its own context (a job id).
"""

from __future__ import annotations

from typing import Any

from shared.errors import (
    DatabaseError,
    DatabaseUnavailable,
    InvalidTransition,
    InvalidValue,
    NotFound,
    PermissionDenied,
)
from shared.logs import log_event

# Our own SQLSTATEs (raised by the migrations) carry messages written for users; PostgREST uses
# the PTxxx class to choose the HTTP status, so the same code means the same thing on both paths.
_OWN_CODES: dict[str, type[DatabaseError]] = {
    "PT404": NotFound,
    "PT409": InvalidTransition,
    "PT403": PermissionDenied,
    "PT400": InvalidValue,
}


def error_for_sqlstate(code: str | None, message: str | None) -> DatabaseError:
    """The library error for a database error code; only our own codes pass their text on."""
    code = code or ""
    if code in _OWN_CODES:
        return _OWN_CODES[code](message)
    if code == "42501" or code.startswith("PGRST30"):
        # Privilege or RLS refusal, or PostgREST refusing the token: the details stay in logs.
        return PermissionDenied()
    if code == "22P02":
        # invalid_text_representation: a value the database could not read as its type (a
        # malformed uuid, say). The caller's to fix, not ours; the value itself stays in logs.
        return InvalidValue()
    if code.startswith("08") or code in {"57P01", "57P03", "53300"}:
        return DatabaseUnavailable()
    if code == "57014":
        return DatabaseUnavailable("The database took too long to answer.")
    return DatabaseError()


def _severity(error: DatabaseError) -> str:
    if isinstance(error, NotFound | InvalidTransition):
        return "INFO"  # an answer a caller can get in the ordinary course of things
    if isinstance(error, PermissionDenied | InvalidValue):
        return "WARNING"
    return "ERROR"


def database_error(
    function: str,
    sqlstate: str | None,
    message: str | None,
    *,
    detail: Any = None,
    hint: Any = None,
    context: Any = None,
) -> DatabaseError:
    """The library error for a driver's report of a failed call to `function`, logged with all
    that the database said; raise it `from` the driver's exception."""
    error = error_for_sqlstate(sqlstate, message)
    error.sqlstate = sqlstate
    error.function = function
    said = {"db_message": message, "db_detail": detail, "db_hint": hint, "db_context": context}
    log_event(
        "database call failed",
        severity=_severity(error),
        function=function,
        sqlstate=sqlstate,
        error=type(error).__name__,
        **{name: value for name, value in said.items() if value},
    )
    return error


def unreachable_error(function: str, cause: BaseException) -> DatabaseUnavailable:
    """The library error for a call to `function` that never reached the database, logged."""
    log_event(
        "database unreachable",
        severity="ERROR",
        function=function,
        cause=repr(cause),
    )
    return DatabaseUnavailable(function=function)
