"""Structured logs: one JSON object per line on stdout, which Cloud Logging reads as a structured
entry (`severity` and `message` are its own fields; the rest lands in jsonPayload)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any


def log_event(message: str, *, severity: str = "INFO", **fields: Any) -> None:
    entry = {
        "severity": severity,
        "message": message,
        "time": datetime.now(UTC).isoformat(),
        **fields,
    }
    sys.stdout.write(json.dumps(entry, default=str) + "\n")
    sys.stdout.flush()
