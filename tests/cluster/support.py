"""Helpers for the cluster tests: a dataset server, the simulator's control API, a sleep that
records instead of sleeping, and waiting for a run to end.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from shared.cluster import (
    ClusterJobStatus,
    GpuConfig,
    SubmitRequest,
    TrainingCluster,
)

API_KEY = "test-cluster-key"
# Runs advance this fast in tests unless a test slows them down: 75 steps in 0.3 s, and a
# whole number of microseconds a step, so point timestamps compare exactly.
STEPS_PER_SECOND = 250.0
# Long enough for any run the tests start; a run still going after it is a failure.
RUN_TIMEOUT_SECONDS = 10.0
_SLICE_SECONDS = 0.25


class _Server(ThreadingHTTPServer):
    # Hundreds of downloads may connect at once; the default backlog of 5 would drop their
    # connection attempts and make them wait for a SYN retransmission.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A download abandoned half-way (a reset simulator, a cancelled run) is no error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class DatasetServer:
    """A tiny HTTP server on 127.0.0.1 that serves dataset files, or errors, by path.

    A file may be served slowly, as a busy object store does: its headers at once, then its body
    in slices over ``delay`` seconds, a slice at least every 0.25 s, so that a slow download is
    never mistaken for a stalled one by a read timeout of a second.
    """

    def __init__(self) -> None:
        self._files: dict[str, tuple[int, bytes, float]] = {}
        files = self._files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body, delay = files.get(self.path, (404, b"no such file", 0.0))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                slices = max(1, math.ceil(delay / _SLICE_SECONDS))
                for number in range(slices):
                    time.sleep(delay / slices)
                    self.wfile.write(
                        body[number * len(body) // slices : (number + 1) * len(body) // slices]
                    )

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output quiet."""

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def publish(self, body: bytes, status: int = 200, delay: float = 0.0) -> str:
        """Serve ``body`` with ``status``, ``delay`` seconds after each request, at a new URL;
        return the URL."""
        path = f"/datasets/{uuid.uuid4().hex}.jsonl?token=signed"
        self._files[path] = (status, body, delay)
        return self.base_url + path

    def jsonl(self, pairs: int, delay: float = 0.0) -> str:
        """A JSONL dataset of ``pairs`` training pairs, one a line."""
        lines = (
            json.dumps({"prompt": f"question {i}", "completion": f"answer {i}"})
            for i in range(pairs)
        )
        return self.publish("\n".join(lines).encode() + b"\n", delay=delay)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class SimulatorControl:
    """The simulator's ``/_sim`` control API."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, timeout=5.0)

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        response = self._http.request(method, path, json=payload)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._call("POST", "/_sim/reset")

    def configure(self, **pacing: float) -> None:
        self._call("POST", "/_sim/config", pacing)

    def inject(self, *rules: dict[str, Any]) -> None:
        self._call("POST", "/_sim/faults", list(rules))

    def faults(self) -> list[dict[str, Any]]:
        faults: list[dict[str, Any]] = self._call("GET", "/_sim/faults")["faults"]
        return faults

    def submissions(self) -> dict[str, Any]:
        submissions: dict[str, Any] = self._call("GET", "/_sim/submissions")
        return submissions

    def requests(self) -> dict[str, int]:
        requests: dict[str, int] = self._call("GET", "/_sim/requests")
        return requests

    def job(self, external_job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("GET", f"/_sim/jobs/{external_job_id}")
        return job

    def fail_at_step(self, external_job_id: str, step: int, message: str) -> None:
        self._call(
            "POST", f"/_sim/jobs/{external_job_id}/fail_at_step", {"step": step, "message": message}
        )

    def close(self) -> None:
        self._http.close()


class RecordingSleep:
    """Stands in for ``asyncio.sleep`` between retries: records each delay, waits for none."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def training_request(dataset_url: str, **hyperparameters: Any) -> SubmitRequest:
    """A submission with a fresh idempotency key and job id."""
    return SubmitRequest(
        idempotency_key=f"job-{uuid.uuid4()}",
        job_id=uuid.uuid4(),
        dataset_url=dataset_url,
        hyperparameters=hyperparameters,
        gpu_config=GpuConfig(gpu_type="A100", gpu_count=1),
    )


async def wait_until_ended(cluster: TrainingCluster, external_job_id: str) -> ClusterJobStatus:
    """Poll a run (with real, short sleeps) until it has ended, and return its last status."""
    async with asyncio.timeout(RUN_TIMEOUT_SECONDS):
        while True:
            status = await cluster.status(external_job_id)
            if status.status.is_terminal:
                return status
            await asyncio.sleep(0.02)
