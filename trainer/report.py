"""The trainer's side of the event log: one ``shared.training_events`` event a line on stdout,
flushed at once, so the Ray adapter reading the log sees each as it happens."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TextIO

from pydantic import BaseModel

from shared.training_events import encode_event


def now() -> datetime:
    """An event's time: aware, in UTC."""
    return datetime.now(UTC)


class Reporter:
    """Prints events; keeps them too, for callers that run the trainer in-process."""

    def __init__(self, stream: TextIO | None = None, *, keep: bool = False) -> None:
        self._stream = stream
        self.events: list[BaseModel] = []
        self._keep = keep

    def emit(self, event: BaseModel) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(encode_event(event) + "\n")
        stream.flush()
        if self._keep:
            self.events.append(event)


def warn(message: str) -> None:
    """A line for a person reading the log (stderr), not an event."""
    print(f"trainer: {message}", file=sys.stderr, flush=True)
