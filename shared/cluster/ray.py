"""A :class:`~shared.cluster.interface.TrainingCluster` over Ray's Jobs REST API (Ray 2.60).

Each training run is one Ray job whose entrypoint is the trainer (``python -m trainer --spec
<spec>``, the command configurable), and everything the processor learns about the run comes from
two places: the job's record (``GET /api/jobs/{id}``: Ray's status, its times, its error) and the
trainer's event lines in the job's log (``LORA_EVENT {json}``, :mod:`shared.training_events`).
Only ``httpx`` is needed: the functions never install ``ray``.

**Submitting.** The Ray submission id is derived from the idempotency key (``lora-<key>``), so a
repeated submission names the same job; Ray answers a taken id with HTTP 500 and a traceback that
ends in "already exists", which is read as "already submitted" and answered with that job (after
checking that it carries the same job id). The job spec travels base64url-encoded in the
entrypoint; the job asks for ``gpu_count`` GPUs and the GPU type as Ray's accelerator resource
(``accelerator_type:A100``, 0.001 of it, as Ray's own ``accelerator_type=`` option asks), and its
runtime env carries nothing but ``PYTHONUNBUFFERED=1``: anyone holding the dashboard token sees a
job's entrypoint and runtime env, so no secret ever goes there (the spec's signed upload URLs are
capabilities limited to single PUTs, and whoever holds the token can run code on the cluster
anyway).

**Reading the log without keeping state.** The processor runs in stateless invocations, so each
``status`` call reads what it needs afresh, as cheaply as Ray allows. Ray 2.60 gives the last N
lines of a job's log (the state API, ``/api/v0/logs/file?...&lines=N``) or the whole log
(``/api/jobs/{id}/logs``), but no byte range and no first lines (its log websocket streams from
the first line, but only after a fixed one-second wait, and pushes the whole log before a close
takes effect). A poll therefore reads

1. a tail of ``tail_lines`` lines; when it holds the step ``since_step`` (or the run's start),
   every point the processor has not stored yet is in it;
2. otherwise a longer tail, sized from the lines per step the first one showed, and only when
   that does not reach back either, the whole log, once: the processor stores the history and
   asks from its last step next time;
3. and, when the tail lacks the run's ``started`` event (the run's totals and start time, printed
   once near the top of the log), the start marker: a job ``<id>.started`` whose metadata holds
   that event, recorded by the first poll that had to read further back than one tail to find
   it (a no-op job, below). Without a marker the whole log is read, once, and the marker made.

So a caught-up poll costs the same for a run of a thousand steps as for one of a hundred thousand:
the job's record, one tail, and the start marker's record. The history is the step events after
``since_step``, in order, each exactly once; an event line that is off the schema, or events that
contradict each other (steps that do not increase, two endings, steps before the start) raise
:class:`~shared.errors.ClusterBadResponse`.

**Marker jobs.** Nothing about a Ray job can be changed once it is submitted, and the dashboard
offers no other store, so what the adapter must remember about a run it records as jobs of its
own, named after the run (``.`` never occurs in a run's id): ``<id>.started`` and
``<id>.cancel``. Each runs ``true``, asks for no resources and ends at once; only its record
(metadata and submission time) matters, and submitting it twice is harmless.

**States.** PENDING is ``queued`` (Ray keeps a job that waits for a GPU type the cluster lacks
pending; the reason is logged). RUNNING is ``initializing`` until the trainer's ``started`` event,
then ``running``. SUCCEEDED is ``completed`` only when the trainer printed ``completed`` (else
``failed``: an exit without a result is no success); FAILED is ``failed`` with the trainer's
``failed`` event (its code and message) or Ray's; STOPPED is ``cancelled``, unless the trainer had
already printed its own ending (a stop that arrives after ``completed`` leaves it completed). A
``cancelled`` event without Ray's stop (a SIGTERM from a drained node) is ``failed``
(``interrupted``): the run did not finish and nobody cancelled it.

**Cancelling a job that waits for resources.** Ray acknowledges the stop of a pending job but
keeps it PENDING until its start timeout (``RAY_JOB_START_TIMEOUT_SECONDS``, 900 s) fails it, and
refuses to delete a job that has not ended. So the cancel is recorded in the marker job
``<id>.cancel``: a run that is still pending, or that failed without ever starting, while its
marker exists, is ``cancelled``, ended when the marker was submitted. Ray does end the job in
the background: at its start timeout (FAILED, never run), or, should resources free up first,
by the acknowledged stop, delivered as the job starts (STOPPED, again ``cancelled``).

**Failures.** An unknown id is :class:`~shared.errors.ClusterRejected` with ``status_code=404``;
an unreachable Ray, a timeout, HTTP 5xx, 408 or 429 are retried within the call (jittered
exponential backoff, honouring ``Retry-After``) and then raise
:class:`~shared.errors.ClusterUnavailable`, as 401 and 403 do at once (a wrong token is the
deployment's fault, not the job's). Every request carries ``Authorization: Bearer <key>``, which
Ray's own token authentication (``RAY_AUTH_MODE=token``) and auth proxies in front of the
dashboard both accept.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from hashlib import sha256
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from shared.cluster.models import (
    CancelResult,
    ClusterJobError,
    ClusterJobState,
    ClusterJobStatus,
    MetricsPoint,
    SubmitRequest,
    SubmitResult,
)
from shared.cluster.retry_after import retry_after_seconds
from shared.errors import ClusterBadResponse, ClusterError, ClusterRejected, ClusterUnavailable
from shared.training_events import (
    EVENT_PREFIX,
    CancelledEvent,
    CompletedEvent,
    FailedEvent,
    StartedEvent,
    StepEvent,
    TrainerSpec,
    TrainingEvent,
    UnreadableEvent,
    parse_event_line,
)

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

DEFAULT_ENTRYPOINT = "python -m trainer"
_USER_AGENT = "lora-runner"
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_CREDENTIAL_STATUSES = frozenset({401, 403})
# `sh -c <entrypoint>` takes one argument of at most MAX_ARG_STRLEN (128 KiB) on Linux.
_MAX_ENTRYPOINT_BYTES = 120_000
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Marker jobs (module docstring) are named after the run; "." never occurs in a run's id.
_CANCEL_SUFFIX = ".cancel"
_STARTED_SUFFIX = ".started"
_MARKER_ENTRYPOINT = "true"
# Ray's names for GPU types (ray.util.accelerators) where they differ from this project's.
_RAY_ACCELERATOR_NAMES = {"A100-80GB": "A100-80G", "A100-40GB": "A100-40G"}
# What Ray's own `accelerator_type=` option asks for: each node offers 1 of its type.
_ACCELERATOR_SHARE = 0.001
_RAY_TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
# A second, longer tail is read when the processor is behind by at most this many lines; beyond
# that the whole log is cheaper than guessing again.
_MAX_TAIL_LINES = 20_000
_ERROR_MESSAGE_CHARS = 2_000
# A since_step beyond any run's steps: the caller wants the state, not the history.
_ALL_SEEN = 2**62


def submission_id_for(idempotency_key: str) -> str:
    """The Ray submission id of the run started with ``idempotency_key``: ``lora-<key>`` for
    keys of letters, digits, ``-`` and ``_`` (the processor's UUIDs), else ``lora.<sha256>``,
    so that no key can name another key's job or a cancel marker."""
    if _SAFE_KEY.fullmatch(idempotency_key):
        return f"lora-{idempotency_key}"
    return "lora." + sha256(idempotency_key.encode()).hexdigest()[:40]


def encode_spec(spec: TrainerSpec) -> str:
    """The ``--spec`` argument: the spec's JSON, base64url-encoded (shell-safe)."""
    return base64.urlsafe_b64encode(spec.model_dump_json().encode()).decode("ascii")


class _TransientFailure(Exception):
    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


class RayJobsCluster:
    """A :class:`~shared.cluster.interface.TrainingCluster` reached over Ray's Jobs REST API.

    ``base_url`` is the Ray dashboard (``http://head:8265``, or the auth proxy in front of it).
    ``entrypoint`` is the command that runs the trainer (``--spec <spec>`` is appended);
    ``tail_lines`` how many log lines a poll reads first. Pass ``client`` to share a connection
    pool (left open by :meth:`aclose`) or ``transport`` to route requests through a test
    transport; ``sleep`` waits between attempts.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        entrypoint: str = DEFAULT_ENTRYPOINT,
        tail_lines: int = 200,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        max_attempts: int = 3,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        retry_after_max: float = 10.0,
        max_connections: int = 100,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        if not api_key:
            raise ValueError("api_key is required")
        if not entrypoint.strip():
            # Ray runs an empty entrypoint and reports it SUCCEEDED: never send one.
            raise ValueError("entrypoint must not be empty")
        if tail_lines < 10:
            raise ValueError("tail_lines must be at least 10")
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if client is not None and transport is not None:
            raise ValueError("pass either client or transport, not both")
        self._base_url = base_url.rstrip("/")
        self._entrypoint = entrypoint.strip()
        self._tail_lines = tail_lines
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": _USER_AGENT}
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=read_timeout
        )
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._retry_after_max = retry_after_max
        self._sleep = sleep
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    # --- the port ------------------------------------------------------------------------------

    async def submit(self, request: SubmitRequest) -> SubmitResult:
        """Start a run, or find the one already started with the same idempotency key."""
        submission_id = submission_id_for(request.idempotency_key)
        spec = TrainerSpec(
            job_id=str(request.job_id),
            dataset_url=request.dataset_url,
            hyperparameters=request.hyperparameters,
            artifacts=request.artifacts,
        )
        entrypoint = f"{self._entrypoint} --spec {encode_spec(spec)}"
        if len(entrypoint.encode()) > _MAX_ENTRYPOINT_BYTES:
            raise ClusterRejected(
                f"the job spec takes {len(entrypoint.encode())} bytes as a command; Ray runs "
                f"at most {_MAX_ENTRYPOINT_BYTES}",
                status_code=413,
                code="spec_too_large",
            )
        gpu = request.gpu_config
        accelerator = _RAY_ACCELERATOR_NAMES.get(gpu.gpu_type, gpu.gpu_type)
        body = {
            "submission_id": submission_id,
            "entrypoint": entrypoint,
            "entrypoint_num_gpus": gpu.gpu_count,
            "entrypoint_resources": {f"accelerator_type:{accelerator}": _ACCELERATOR_SHARE},
            "runtime_env": {"env_vars": {"PYTHONUNBUFFERED": "1"}},
            # What the run asked for, so a waiting run can say what it waits for: Ray's job
            # record does not carry the entrypoint's resources.
            "metadata": {
                "job_id": str(request.job_id),
                "submitted_by": _USER_AGENT,
                "gpu_type": gpu.gpu_type,
                "gpu_count": str(gpu.gpu_count),
            },
        }
        response = await self._call(
            "submit", "POST", "/api/jobs/", json=body, accept=_already_exists
        )
        if _already_exists(response):
            return await self._existing(submission_id, request)
        answered = _json_object(response, "submit").get("submission_id")
        if answered != submission_id:
            raise ClusterBadResponse(
                f"Ray answered submit with submission id {answered!r}, not {submission_id!r}"
            )
        return SubmitResult(external_job_id=submission_id, status=ClusterJobState.QUEUED)

    async def status(self, external_job_id: str, since_step: int = 0) -> ClusterJobStatus:
        """Read a run's state, with the metrics recorded after step ``since_step``."""
        if since_step < 0:
            raise ValueError("since_step must not be negative")
        info = await self._job(external_job_id)
        ray_status = _ray_status(info)
        events: list[TrainingEvent] = []
        if info.get("driver_node_id"):
            events = await self._read_log(
                external_job_id, info, since_step, terminal=ray_status in _RAY_TERMINAL
            )
        marker = None
        if ray_status == "PENDING" or (ray_status == "FAILED" and not info.get("driver_node_id")):
            marker = await self._cancel_marker(external_job_id)
        report = _report(external_job_id, info, events, since_step, marker)
        if ray_status == "PENDING" and marker is None:
            # Waiting for a GPU type the cluster lacks, or for busy GPUs, looks the same to Ray:
            # say what the run waits for.
            report = report.model_copy(update={"status_message": _waiting_reason(info)})
        return report

    async def cancel(self, external_job_id: str) -> CancelResult:
        """Stop a run; a run that has already ended stays as it is, and the answer says so."""
        info = await self._job(external_job_id)
        ray_status = _ray_status(info)
        if ray_status in _RAY_TERMINAL:
            return await self._settled(external_job_id)
        response = await self._call(
            "cancel", "POST", f"/api/jobs/{quote(external_job_id, safe='')}/stop"
        )
        stopped = _json_object(response, "cancel").get("stopped")
        if ray_status == "PENDING":
            # The stop waits for resources with the job: record the cancel (module docstring).
            await self._mark_cancelled(external_job_id)
            return CancelResult(external_job_id=external_job_id, status=ClusterJobState.CANCELLED)
        if stopped is True:
            return CancelResult(external_job_id=external_job_id, status=ClusterJobState.CANCELLED)
        # The job ended between the two calls: answer how.
        return await self._settled(external_job_id)

    async def aclose(self) -> None:
        """Close the connection pool, unless it was lent by the caller."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- jobs ----------------------------------------------------------------------------------

    async def _job(self, submission_id: str) -> dict[str, Any]:
        response = await self._call("status", "GET", f"/api/jobs/{quote(submission_id, safe='')}")
        info = _json_object(response, "status")
        if info.get("submission_id") != submission_id:
            raise ClusterBadResponse(
                f"Ray answered for job {info.get('submission_id')!r}, not {submission_id!r}"
            )
        return info

    async def _existing(self, submission_id: str, request: SubmitRequest) -> SubmitResult:
        info = await self._job(submission_id)
        metadata = info.get("metadata") or {}
        if metadata.get("job_id") != str(request.job_id):
            raise ClusterRejected(
                f"Ray job {submission_id} belongs to job {metadata.get('job_id')!r}, not "
                f"{request.job_id}: the idempotency key was reused",
                status_code=409,
                code="idempotency_key_reused",
            )
        status = await self.status(submission_id, since_step=_ALL_SEEN)
        return SubmitResult(external_job_id=submission_id, status=status.status)

    async def _settled(self, submission_id: str) -> CancelResult:
        status = await self.status(submission_id, since_step=_ALL_SEEN)
        return CancelResult(external_job_id=submission_id, status=status.status)

    async def _cancel_marker(self, submission_id: str) -> dict[str, Any] | None:
        try:
            return await self._job(submission_id + _CANCEL_SUFFIX)
        except ClusterRejected as exc:
            if exc.status_code == 404:
                return None
            raise

    async def _mark_cancelled(self, submission_id: str) -> None:
        body = {
            "submission_id": submission_id + _CANCEL_SUFFIX,
            "entrypoint": _MARKER_ENTRYPOINT,
            "metadata": {"cancels": submission_id, "submitted_by": _USER_AGENT},
        }
        await self._call("cancel", "POST", "/api/jobs/", json=body, accept=_already_exists)

    # --- the log -------------------------------------------------------------------------------

    async def _read_log(
        self, submission_id: str, info: Mapping[str, Any], since_step: int, *, terminal: bool
    ) -> list[TrainingEvent]:
        """The events of the job's log that a report needs: every step after ``since_step``,
        the last step, the start and the ending (module docstring: how little is read)."""
        node_id = str(info["driver_node_id"])
        lines = self._tail_lines
        for attempt in range(2):
            text = await self._tail(submission_id, node_id, lines)
            events, line_count = _parse_log(text, terminal=terminal)
            whole = line_count < lines  # the tail is the whole log
            if whole or _reaches_back(events, since_step):
                if whole or any(isinstance(e, StartedEvent) for e in events):
                    if attempt > 0:
                        await self._record_start_in(submission_id, events)
                    return events
                started = await self._recorded_start(submission_id)
                if started is not None:
                    return [started, *events]
                break  # the start is further back than any tail: read it all
            if attempt == 0:
                wanted = _lines_back_to(events, line_count, since_step)
                if wanted is None or wanted > _MAX_TAIL_LINES:
                    break
                lines = wanted
        response = await self._call(
            "status", "GET", f"/api/jobs/{quote(submission_id, safe='')}/logs"
        )
        logs = _json_object(response, "status").get("logs")
        if not isinstance(logs, str):
            raise ClusterBadResponse("Ray answered the job's log without its text")
        events, _ = _parse_log(logs, terminal=terminal)
        await self._record_start_in(submission_id, events)
        return events

    async def _record_start_in(self, submission_id: str, events: Sequence[TrainingEvent]) -> None:
        started = next((e for e in events if isinstance(e, StartedEvent)), None)
        if started is not None:
            await self._record_start(submission_id, started)

    async def _tail(self, submission_id: str, node_id: str, lines: int) -> str:
        response = await self._call(
            "status",
            "GET",
            "/api/v0/logs/file",
            params={"node_id": node_id, "submission_id": submission_id, "lines": lines},
        )
        return response.text

    async def _recorded_start(self, submission_id: str) -> StartedEvent | None:
        """The run's ``started`` event as recorded in its start marker, if there is one."""
        try:
            marker = await self._job(submission_id + _STARTED_SUFFIX)
        except ClusterRejected as exc:
            if exc.status_code == 404:
                return None
            raise
        try:
            event = parse_event_line(EVENT_PREFIX + str((marker.get("metadata") or {})["started"]))
        except (KeyError, UnreadableEvent):
            log.warning("Ray job %s: its start marker is unreadable", submission_id)
            return None
        return event if isinstance(event, StartedEvent) else None

    async def _record_start(self, submission_id: str, started: StartedEvent) -> None:
        """Record the run's ``started`` event in a marker job, so that later polls need not read
        the head of a long log to learn it. Best effort: a poll that finds no marker reads the
        whole log once more and records it then."""
        body = {
            "submission_id": submission_id + _STARTED_SUFFIX,
            "entrypoint": _MARKER_ENTRYPOINT,
            "metadata": {
                "started": started.model_dump_json(),
                "marks": submission_id,
                "submitted_by": _USER_AGENT,
            },
        }
        try:
            await self._call("status", "POST", "/api/jobs/", json=body, accept=_already_exists)
        except ClusterError as exc:
            log.warning("Ray job %s: its start was not recorded: %s", submission_id, exc)

    # --- HTTP ----------------------------------------------------------------------------------

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        accept: Callable[[httpx.Response], bool] | None = None,
    ) -> httpx.Response:
        attempt = 1
        while True:
            try:
                return await self._attempt(operation, method, path, json, params, accept)
            except _TransientFailure as exc:
                if attempt >= self._max_attempts:
                    raise ClusterUnavailable(
                        f"Ray {operation} failed after {attempt} attempt"
                        f"{'' if attempt == 1 else 's'}; last error: {exc.cause}"
                    ) from exc
                delay = exc.retry_after
                if delay is None:
                    delay = min(
                        self._backoff_max, self._backoff_initial * 2 ** (attempt - 1)
                    ) + random.uniform(0, self._backoff_initial)  # noqa: S311 - jitter
                else:
                    delay = min(delay, self._retry_after_max)
                log.warning(
                    "Ray %s attempt %d of %d failed (%s); retrying in %.2f s",
                    operation,
                    attempt,
                    self._max_attempts,
                    exc.cause,
                    delay,
                )
                await self._sleep(delay)
                attempt += 1

    async def _attempt(
        self,
        operation: str,
        method: str,
        path: str,
        json: Any,
        params: Mapping[str, str | int] | None,
        accept: Callable[[httpx.Response], bool] | None,
    ) -> httpx.Response:
        try:
            response = await self._client.request(
                method,
                self._base_url + path,
                json=json,
                params=params,
                headers=self._headers,
                timeout=self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise _TransientFailure(f"{type(exc).__name__} after {self._timeout}") from exc
        except httpx.HTTPError as exc:
            raise _TransientFailure(f"{type(exc).__name__}: {exc or 'connection failed'}") from exc
        status = response.status_code
        if status < 300 or (accept is not None and accept(response)):
            return response
        text = _short(response.text)
        described = f"HTTP {status} {response.reason_phrase}" + (f": {text}" if text else "")
        if status in _TRANSIENT_STATUSES:
            raise _TransientFailure(described, retry_after_seconds(response.headers))
        if status in _CREDENTIAL_STATUSES:
            raise ClusterUnavailable(
                f"Ray refused the credentials ({described}); check GPU_CLUSTER_API_KEY"
            )
        if 400 <= status < 500:
            raise ClusterRejected(
                f"Ray rejected {operation}: {text or described}", status_code=status
            )
        raise ClusterBadResponse(f"Ray answered {operation} with {described}")


def _already_exists(response: httpx.Response) -> bool:
    # Ray 2.60 answers a taken submission id with HTTP 500 and a traceback ending in
    # "ValueError: Job with submission_id ... already exists. Please use a different ...".
    return response.status_code == 500 and "already exists" in response.text[-2000:]


def _json_object(response: httpx.Response, operation: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise ClusterBadResponse(
            f"Ray answered {operation} with a body that is not JSON "
            f"(HTTP {response.status_code}, {len(response.content)} bytes)"
        ) from exc
    if not isinstance(body, dict):
        raise ClusterBadResponse(f"Ray answered {operation} with JSON that is not an object")
    return body


def _ray_status(info: Mapping[str, Any]) -> str:
    status = info.get("status")
    if status not in ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"):
        raise ClusterBadResponse(f"Ray reported an unknown job status {status!r}")
    return str(status)


def _short(text: str, limit: int = 300) -> str:
    """The end of an error body, where Ray's tracebacks say what went wrong."""
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


# --- events --------------------------------------------------------------------------------------


def _event_on(line: str) -> TrainingEvent | None:
    """The event on a log line. The prefix is looked for anywhere in the line: a progress bar
    on stderr (same file) can leave text without a newline just before an event."""
    start = line.find(EVENT_PREFIX)
    if start < 0:
        return None
    try:
        return parse_event_line(line[start:])
    except UnreadableEvent as exc:
        raise ClusterBadResponse(f"the trainer's log has {exc}") from exc


def _parse_log(text: str, *, terminal: bool) -> tuple[list[TrainingEvent], int]:
    """The events in a stretch of log, and how many lines it has (a last one without its
    newline included). While the job runs, that last line is still being written: its event is
    left for the next poll."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    count = len(lines)
    if not terminal and not text.endswith("\n") and lines:
        lines.pop()
    events = [event for line in lines if (event := _event_on(line)) is not None]
    return events, count


def _reaches_back(events: Sequence[TrainingEvent], since_step: int) -> bool:
    """Whether a tail holds every step after ``since_step``: it holds that step (or one
    before it), or the run's start."""
    return any(
        isinstance(e, StartedEvent) or (isinstance(e, StepEvent) and e.step <= since_step)
        for e in events
    )


def _lines_back_to(events: Sequence[TrainingEvent], line_count: int, since_step: int) -> int | None:
    """How long a tail should reach back to step ``since_step``, estimated from the lines per
    step of a tail that did not; None when the tail has too few steps to tell."""
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    if len(steps) < 2 or steps[-1] <= steps[0]:
        return None
    lines_per_step = line_count / (steps[-1] - steps[0] + 1)
    missing = steps[0] - since_step
    return int((line_count + missing * lines_per_step) * 1.25) + 50


def _waiting_reason(info: Mapping[str, Any]) -> str:
    """Why a pending job waits, from what it asked for (recorded in its metadata)."""
    metadata = info.get("metadata") or {}
    gpu_type, gpu_count = metadata.get("gpu_type"), metadata.get("gpu_count")
    wanted = f"{gpu_count} {gpu_type}" if gpu_type and gpu_count else "its GPUs"
    reason = f"Waiting for {wanted} at the cluster: none is free, or the cluster has none."
    said = info.get("message")
    if isinstance(said, str) and said.strip():
        reason += f" Ray says: {said.strip()}"
    return reason[:1000]


def _report(
    submission_id: str,
    info: Mapping[str, Any],
    events: Sequence[TrainingEvent],
    since_step: int,
    marker: Mapping[str, Any] | None,
) -> ClusterJobStatus:
    started: StartedEvent | None = None
    steps: list[StepEvent] = []
    ending: CompletedEvent | FailedEvent | CancelledEvent | None = None
    for event in events:
        if isinstance(event, StartedEvent):
            if started is not None or steps:
                raise ClusterBadResponse(
                    f"Ray job {submission_id}: the trainer reported a start after it started"
                )
            started = event
        elif isinstance(event, StepEvent):
            if ending is not None:
                raise ClusterBadResponse(
                    f"Ray job {submission_id}: the trainer reported step {event.step} after "
                    f"it {ending.type}"
                )
            if steps and event.step <= steps[-1].step:
                raise ClusterBadResponse(
                    f"Ray job {submission_id}: the trainer reported step {event.step} after "
                    f"step {steps[-1].step}"
                )
            steps.append(event)
        elif isinstance(event, CompletedEvent | FailedEvent | CancelledEvent):
            if ending is not None:
                raise ClusterBadResponse(
                    f"Ray job {submission_id}: the trainer reported both {ending.type} and "
                    f"{event.type}"
                )
            ending = event
    if steps and started is None:
        raise ClusterBadResponse(
            f"Ray job {submission_id}: the trainer reported steps without a start"
        )

    ray_status = _ray_status(info)
    state, error = _state(ray_status, info, started, ending, marker)
    ended_at: datetime | None = None
    if state.is_terminal:
        if marker is not None and state is ClusterJobState.CANCELLED and ending is None:
            ended_at = _ray_time(marker.get("start_time"))
        else:
            ended_at = ending.time if ending is not None else _ray_time(info.get("end_time"))
        if ended_at is not None and started is not None and ended_at < started.time:
            ended_at = started.time  # the node's clock and Ray's disagree by a moment
    points = [_point(step) for step in steps]
    current_step = max(
        [p.step for p in points[-1:]] + [getattr(ending, "step", None) or 0], default=0
    )
    total_steps = started.total_steps if started else None
    if state is ClusterJobState.COMPLETED:
        progress = 100.0
    elif total_steps:
        progress = min(100.0, 100.0 * current_step / total_steps)
    else:
        progress = 0.0
    try:
        return ClusterJobStatus(
            status=state,
            progress=progress,
            current_epoch=points[-1].epoch if points else 0,
            total_epochs=started.total_epochs if started else None,
            current_step=current_step,
            total_steps=total_steps,
            started_at=started.time if started else None,
            ended_at=ended_at,
            metrics=points[-1] if points else None,
            history=[p for p in points if p.step > since_step],
            error=error,
            artifact_uri=ending.artifact_uri if isinstance(ending, CompletedEvent) else None,
        )
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        raise ClusterBadResponse(
            f"Ray job {submission_id}: the trainer's events contradict each other: {problem['msg']}"
        ) from exc


def _state(
    ray_status: str,
    info: Mapping[str, Any],
    started: StartedEvent | None,
    ending: CompletedEvent | FailedEvent | CancelledEvent | None,
    marker: Mapping[str, Any] | None,
) -> tuple[ClusterJobState, ClusterJobError | None]:
    if ray_status == "PENDING":
        return (ClusterJobState.CANCELLED if marker else ClusterJobState.QUEUED), None
    if ray_status == "RUNNING":
        # Until Ray has the process's exit, the run is running, even after its last event.
        return (ClusterJobState.RUNNING if started else ClusterJobState.INITIALIZING), None
    if isinstance(ending, FailedEvent):
        return ClusterJobState.FAILED, ClusterJobError(code=ending.code, message=ending.message)
    if ray_status == "STOPPED":
        if isinstance(ending, CompletedEvent):
            return ClusterJobState.COMPLETED, None  # the stop came after the run had finished
        return ClusterJobState.CANCELLED, None
    if isinstance(ending, CancelledEvent):
        # A SIGTERM that did not come from Ray's stop (a node drained or preempted): the run
        # did not finish, and nobody cancelled it.
        return ClusterJobState.FAILED, ClusterJobError(
            code="interrupted",
            message=f"The trainer was stopped by a signal at step {ending.step}, not by a "
            "cancel, before it finished.",
        )
    if ray_status == "SUCCEEDED":
        if isinstance(ending, CompletedEvent):
            return ClusterJobState.COMPLETED, None
        return ClusterJobState.FAILED, ClusterJobError(
            code="no_result",
            message="The trainer exited without reporting that training completed.",
        )
    # FAILED
    if marker is not None:
        return ClusterJobState.CANCELLED, None  # cancelled while waiting, then timed out
    error_type = info.get("error_type")
    message = str(info.get("message") or "Ray reported the job failed without a reason.")
    if len(message) > _ERROR_MESSAGE_CHARS:
        message = message[: _ERROR_MESSAGE_CHARS - 3] + "..."
    code = str(error_type).lower() if error_type else "ray_job_failed"
    return ClusterJobState.FAILED, ClusterJobError(code=code, message=message)


def _point(step: StepEvent) -> MetricsPoint:
    return MetricsPoint(
        epoch=step.epoch,
        step=step.step,
        training_loss=step.training_loss,
        validation_loss=step.validation_loss,
        learning_rate=step.learning_rate,
        throughput=step.tokens_per_second,
        gpu_utilization=step.gpu_utilization,
        gpu_memory=step.gpu_memory_gb,
        recorded_at=step.time,
    )


def _ray_time(milliseconds: object) -> datetime | None:
    if isinstance(milliseconds, int | float) and milliseconds > 0:
        return datetime.fromtimestamp(milliseconds / 1000, UTC)
    return None


__all__ = ["DEFAULT_ENTRYPOINT", "RayJobsCluster", "encode_spec", "submission_id_for"]
