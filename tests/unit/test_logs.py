"""Every log record of a function's process, the libraries' included, is one line of JSON with
Cloud Logging's `severity`."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from shared.logs import configure_logging, log_event


@pytest.fixture
def configured() -> Iterator[None]:
    """configure_logging() as a function process runs it, undone afterwards (pytest's own
    capture handlers are on the root logger too)."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("shared").level)
    configure_logging()
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("shared").setLevel(saved[2])


def _fail() -> None:
    raise RuntimeError("boom")


def _entries(out: str) -> list[dict[str, object]]:
    lines = out.splitlines()
    entries = [json.loads(line) for line in lines]
    assert all(isinstance(entry, dict) for entry in entries)
    return entries


def test_every_record_is_one_json_line_with_severity(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library's stdlib record, one of ours, an event with fields and an exception's traceback
    each come out on stdout as one JSON object per line, with severity, message, time and logger;
    a traceback lands in `stack_trace`, not on lines of its own."""
    logging.getLogger("psycopg.pool").warning("pool %s is\nstretched", "main")
    logging.getLogger("shared.processor").info("cycle started")
    log_event("processor cycle", claimed=3, job_id="j-1")
    try:
        _fail()
    except RuntimeError:
        log_event("request failed", severity="ERROR", exc_info=True, kind="RuntimeError")

    out, err = capsys.readouterr()
    assert err == ""
    library, ours, event, failure = _entries(out)
    assert library["severity"] == "WARNING"
    assert library["message"] == "pool main is\nstretched"
    assert library["logger"] == "psycopg.pool"
    assert isinstance(library["time"], str)
    assert ours["severity"] == "INFO"
    assert ours["logger"] == "shared.processor"
    assert event["severity"] == "INFO"
    assert event["message"] == "processor cycle"
    assert (event["claimed"], event["job_id"]) == (3, "j-1")
    assert failure["severity"] == "ERROR"
    assert failure["kind"] == "RuntimeError"
    assert "RuntimeError: boom" in str(failure["stack_trace"])


def test_libraries_log_from_warning_and_ours_from_info(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """httpx's per-request INFO lines stay out; the project's own INFO events do not."""
    logging.getLogger("httpx").info("HTTP Request: POST https://cluster/jobs")
    log_event("cancel left to the processor", job_id="j-2")

    [entry] = _entries(capsys.readouterr().out)
    assert entry["message"] == "cancel left to the processor"


def test_configuring_twice_installs_one_handler(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """configure_logging() replaces the root logger's other handlers and installs its own once,
    however often it is called: no record is written twice."""
    logging.getLogger().addHandler(logging.StreamHandler())
    configure_logging()
    configure_logging()
    assert len(logging.getLogger().handlers) == 1

    logging.getLogger("psycopg").error("once")

    assert [entry["message"] for entry in _entries(capsys.readouterr().out)] == ["once"]


def test_fields_do_not_replace_the_entrys_own_keys(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A field named like one of the entry's own keys cannot change its severity or time."""
    log_event("odd fields", severity="WARNING", time="yesterday", logger="someone else")

    [entry] = _entries(capsys.readouterr().out)
    assert entry["severity"] == "WARNING"
    assert entry["time"] != "yesterday"
    assert entry["logger"] == "shared.events"
