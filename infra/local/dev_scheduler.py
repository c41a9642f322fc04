"""`make dev`'s stand-in for Cloud Scheduler: it calls process-training-jobs every few seconds."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import IO, Any

import httpx


class Scheduler:
    """Calls process-training-jobs every interval with the cron secret, as Cloud Scheduler would,
    from a thread of its own.

    Reports cycles that did something, and a failure once until the function answers again.
    """

    def __init__(self, url: str, secret: str, interval: float, out: IO[str]) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {secret}"}
        self._interval = interval
        self._out = out
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dev-scheduler", daemon=True)
        self._last_problem: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(timeout=120) as client:
            while True:
                self._tick(client)
                if self._stopping.wait(self._interval):
                    return

    def _tick(self, client: httpx.Client) -> None:
        summary: dict[str, Any] = {}
        try:
            response = client.post(self._url, headers=self._headers)
            problem = None if response.is_success else f"answered {response.status_code}"
            if problem is None:
                summary = response.json()["data"]
        except httpx.HTTPError as exc:
            problem = f"could not be reached ({type(exc).__name__})"
        except (ValueError, KeyError, TypeError):
            problem = "answered with a body that is not its JSON summary"
        if self._stopping.is_set():
            return
        if problem is not None:
            if problem != self._last_problem:
                self._say(f"process-training-jobs {problem}; retrying every cycle")
            self._last_problem = problem
            return
        if self._last_problem is not None:
            self._say("process-training-jobs answers again")
            self._last_problem = None
        events = [
            f"{summary[key]} {key}"
            for key in ("claimed", "submitted", "completed", "failed", "cancelled")
            if summary.get(key)
        ]
        if events:
            self._say("cycle: " + ", ".join(events))

    def _say(self, message: str) -> None:
        print(f"[scheduler {datetime.now().astimezone():%H:%M:%S}] {message}", file=self._out)
        self._out.flush()
