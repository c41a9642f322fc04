"""Structured logs: one JSON object per line on stdout, which Cloud Logging reads as a structured
entry (`severity` and `message` are its own fields; the rest lands in jsonPayload).

Every line goes through :class:`CloudLoggingFormatter`: the project's own events
(:func:`log_event`), the standard library's `logging` records of every library (psycopg's pool,
httpx, Flask's "Exception on ..."), and the HTTP server's error log. :func:`configure_logging`
installs it once per function process, as the root logger's only handler.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# Where log_event's fields travel on a LogRecord (the name Google's own logging library uses).
FIELDS_ATTRIBUTE = "json_fields"
# The project's events, and its modules' loggers (`logging.getLogger(__name__)` under `shared`).
EVENTS_LOGGER = "shared.events"
_OWN_LOGGERS = ("shared", EVENTS_LOGGER)

_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}
# The entry's own keys: a field of the same name does not replace them.
_RESERVED = ("severity", "message", "time", "logger")


class CloudLoggingFormatter(logging.Formatter):
    """A record as one line of JSON: Cloud Logging's `severity`, the message, the time and the
    logger, then the record's `json_fields`, and any exception's traceback as `stack_trace`
    (where Error Reporting looks for it)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        fields = getattr(record, FIELDS_ATTRIBUTE, None)
        if isinstance(fields, dict):
            for name, value in fields.items():
                if name not in _RESERVED:
                    entry[name] = value
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["stack_trace"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        # One physical line, whatever the message holds: json.dumps escapes newlines.
        return json.dumps(entry, default=str)


class StdoutHandler(logging.Handler):
    """Writes to whatever `sys.stdout` is at the time of each record (functions-framework
    redirects it per request when LOG_EXECUTION_ID is on), one flushed line per record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stdout
            stream.write(line + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never break the caller
            self.handleError(record)


_formatter = CloudLoggingFormatter()


def formatter() -> CloudLoggingFormatter:
    """The one formatter of this process."""
    return _formatter


def configure_logging() -> None:
    """Route every log record of this process through the formatter, on stdout. Idempotent.

    The project's own loggers log from INFO up, the libraries' from WARNING up (httpx would
    otherwise log every request at INFO). Handlers others installed on the root logger are
    replaced, so no record is written twice or in another format.
    """
    root = logging.getLogger()
    ours = [handler for handler in root.handlers if isinstance(handler, StdoutHandler)]
    handler = ours[0] if ours else StdoutHandler()
    handler.setFormatter(_formatter)
    for other in list(root.handlers):
        if other is not handler:
            root.removeHandler(other)
    if not ours:
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in _OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    _format_gunicorn_logs()


def _format_gunicorn_logs() -> None:
    """Give gunicorn's own loggers (functions-framework serves with gunicorn) the formatter.

    gunicorn sets its loggers up after the function's module is imported, with handlers and a
    text format of its own; wrapping its setup is the one place to reach them.
    """
    try:
        from gunicorn import glogging  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - the dev server, or a platform without gunicorn
        return
    original = glogging.Logger.setup
    if getattr(original, "_json_formatted", False):
        return

    def setup(self: Any, cfg: Any) -> None:
        original(self, cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(_formatter)

    setup._json_formatted = True  # type: ignore[attr-defined]
    glogging.Logger.setup = setup


def log_event(
    message: str, *, severity: str = "INFO", exc_info: bool = False, **fields: Any
) -> None:
    """Log `message` with `fields` as one structured entry (a thin wrapper over `logging`);
    `exc_info` adds the traceback of the exception being handled."""
    level = _LEVELS.get(severity.upper())
    if level is None:
        raise ValueError(f"unknown severity {severity!r}; use one of {', '.join(_LEVELS)}")
    logging.getLogger(EVENTS_LOGGER).log(
        level, message, exc_info=exc_info, extra={FIELDS_ATTRIBUTE: fields}
    )
