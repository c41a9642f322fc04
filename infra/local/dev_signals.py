"""Ctrl-C and SIGTERM for `make dev`, received without taking a lock.

A Python signal handler runs in the main thread between two bytecodes, possibly while that thread
holds a lock: inside ``Event.wait``, a handler that calls ``Event.set`` on the same event waits
forever for the lock its own thread holds (Ctrl-C then hung `make dev`). So the handler here does
nothing at all: the interpreter itself writes each signal's number to a socket
(``signal.set_wakeup_fd``), and :meth:`StopSignals.wait` selects on that socket.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any, Self

# What stops `make dev`: Ctrl-C in its terminal, or a plain `kill`.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})

_Handler = Callable[[int, FrameType | None], Any] | int | None


class StopSignals:
    """SIGINT and SIGTERM, noted while the block runs (in the main thread only).

    On entry the signals are unblocked: a process started with them blocked (see
    :func:`blocked`) receives a stop request that came while it was starting up only now, once
    it notes it instead of dying of it.
    """

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous_handlers: dict[signal.Signals, _Handler] = {}
        self._previous_wakeup_fd = -1
        self._requested = False

    def __enter__(self) -> Self:
        self._previous_wakeup_fd = signal.set_wakeup_fd(
            self._writer.fileno(), warn_on_full_buffer=False
        )
        for sig in STOP_SIGNALS:
            self._previous_handlers[sig] = signal.signal(sig, _noted_by_the_wakeup_fd)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous_handlers.items():
            if handler is not None:  # None: not set from Python, so not ours to restore
                signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        self._reader.close()
        self._writer.close()

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a stop signal (0: not at all); whether one has come,
        now or before: once one has, every call answers True at once."""
        if not self._requested and select.select([self._reader], [], [], timeout)[0]:
            with contextlib.suppress(BlockingIOError):
                while received := self._reader.recv(64):
                    self._requested |= any(number in STOP_SIGNALS for number in received)
        return self._requested


@contextlib.contextmanager
def blocked() -> Iterator[None]:
    """SIGINT and SIGTERM held back while the block runs, then delivered.

    A child process started in the block inherits the blocked signals: one that is sent to it
    before it can note them waits until it enters :class:`StopSignals`.
    """
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)


def _noted_by_the_wakeup_fd(signum: int, frame: FrameType | None) -> None:
    """Nothing: the interpreter has written the signal's number to the wakeup socket already."""
