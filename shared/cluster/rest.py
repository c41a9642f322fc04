"""The REST adapter: a GPU cluster that speaks the JSON contract of openapi/cluster.yaml over HTTPS.

Every attempt is bounded by explicit connect and read timeouts, and only transient failures are
retried, with jittered exponential backoff and a bounded number of attempts:

- no connection, a dropped connection or a timeout;
- HTTP 429 and 503 (honouring ``Retry-After``, up to ``retry_after_max``), 408, 502 and 504;
- HTTP 500: a crashing API process usually recovers, and since all three calls are idempotent by
  contract a repeat cannot start a second run. Other 5xx (501, 505, 507...) describe the
  cluster's setup rather than a passing fault: they raise
  :class:`~shared.errors.ClusterUnavailable` without a retry within the call.

Retrying ``POST /training/submit`` is safe because the cluster deduplicates by idempotency key.
Every other 4xx is the request's fault and raises :class:`~shared.errors.ClusterRejected` at
once, except 401 and 403: a wrong API key is the deployment's fault, not the job's, so it raises
:class:`~shared.errors.ClusterUnavailable` (not retried within the call: the key will not fix
itself in a second) and a job is never failed outright because of it. A body that is not the
contract's JSON raises :class:`~shared.errors.ClusterBadResponse`; it is not retried within the
call either, since a cluster that answers off-contract tends to keep doing so.

Why aiohttp and not httpx here. A processor cycle polls up to ``PROCESSOR_CONCURRENCY`` runs at
once, so this client's CPU per request bounds the cycle on a small instance. Polling 1,000 runs
at concurrency 100 on 2 cores (README, ``bench.processor``), httpx 0.28 (httpcore 1.0) spent
1.5-2 ms of CPU per request and aiohttp 3.14 about 0.2 ms. httpcore's pool re-scans every
connection and queued request on each request and each release (1.4 million idle checks for
1,000 requests), keeps only 20 of its 100 connections alive (so it opened about one per request)
and, without ``sniffio`` installed, tries that import again on every lock and event it sets up
(13 per request). aiohttp parses HTTP in C and hands a released connection to one waiter. httpx
keeps its place in the synchronous clients (PostgREST, Supabase Storage), in the tests' and
benchmarks' control calls and in the simulator's downloads: one request at a time, where its
cost is noise.

Connections come from a pool of at most ``max_connections`` (the processor passes its
concurrency, so every call in flight has one and none wait), opened on first use in the running
event loop and kept alive for a few seconds between calls. aiohttp itself sends a GET once more
when the connection drops before any answer (RFC 9112 §9.3.1: usually a keep-alive connection
the server had just closed); that resend belongs to the attempt. Proxies are not read from the
environment; lend a configured session for one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from json import loads
from types import TracebackType
from typing import Self, TypeVar
from urllib.parse import quote

import aiohttp
from aiohttp.http_exceptions import ContentEncodingError
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.cluster.models import CancelResult, ClusterJobStatus, SubmitRequest, SubmitResult
from shared.cluster.retry_after import retry_after_seconds
from shared.errors import ClusterBadResponse, ClusterRejected, ClusterUnavailable

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
_ModelT = TypeVar("_ModelT", bound=BaseModel)

_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_CREDENTIAL_STATUSES = frozenset({401, 403})
_USER_AGENT = "lora-runner"
# Idle connections are closed after this long, before most servers close them (uvicorn: 5 s).
_KEEPALIVE_SECONDS = 4.0


class _TransientFailure(Exception):
    """One attempt failed in a way that a later attempt may not."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Answer:
    """An HTTP answer, read whole: the status line, the headers and the body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def reason(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return ""


class RestTrainingCluster:
    """A :class:`~shared.cluster.interface.TrainingCluster` reached over the REST contract.

    ``max_connections`` bounds the connection pool. Pass ``session`` to lend an
    :class:`aiohttp.ClientSession` instead (its own connector then sets the bound, and
    :meth:`aclose` leaves it open): tests lend one that records or fakes the traffic. ``sleep``
    waits between attempts; tests pass one that records the delay instead of sleeping.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        max_attempts: int = 3,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        retry_after_max: float = 10.0,
        max_connections: int = 100,
        session: aiohttp.ClientSession | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        if not api_key:
            raise ValueError("api_key is required")
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        # `connect` covers waiting for a pooled connection (up to the read budget, as before)
        # plus opening one (`sock_connect`): a saturated pool surfaces as a transient timeout,
        # as a slow answer would. `sock_read` bounds each wait for the answer's bytes.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=read_timeout + connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._max_attempts = max_attempts
        self._retry_after_max = retry_after_max
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial
        )
        self._sleep = sleep
        self._max_connections = max_connections
        self._owns_session = session is None
        self._session = session
        self._closed = False

    async def submit(self, request: SubmitRequest) -> SubmitResult:
        """Start a run, or find the one already started with the same idempotency key."""
        answer = await self._call(
            "submit",
            "POST",
            "/training/submit",
            body=request.model_dump_json().encode(),
            # Gateways in front of a cluster often deduplicate on this header.
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": request.idempotency_key,
            },
        )
        return _decode(answer, SubmitResult, "submit")

    async def status(self, external_job_id: str, since_step: int = 0) -> ClusterJobStatus:
        """Read a run's state, with the metrics recorded after step ``since_step``."""
        if since_step < 0:
            raise ValueError("since_step must not be negative")
        answer = await self._call(
            "status",
            "GET",
            f"/training/status/{quote(external_job_id, safe='')}?since_step={since_step:d}",
        )
        return _only_newer(_decode(answer, ClusterJobStatus, "status"), since_step)

    async def cancel(self, external_job_id: str) -> CancelResult:
        """Stop a run; a run that has already ended stays as it is, and the answer says so."""
        answer = await self._call(
            "cancel", "POST", f"/training/cancel/{quote(external_job_id, safe='')}"
        )
        return _decode(answer, CancelResult, "cancel")

    async def aclose(self) -> None:
        """Close the connection pool, unless it was lent by the caller."""
        if not self._owns_session:
            return
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _session_now(self) -> aiohttp.ClientSession:
        """The session, opened on first use: it belongs to the event loop that runs the calls."""
        if self._session is None:
            if self._closed:
                raise RuntimeError("the cluster client is closed")
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    limit_per_host=0,
                    keepalive_timeout=_KEEPALIVE_SECONDS,
                ),
                timeout=self._timeout,
                # The cluster's cookies would only make requests differ; none are kept.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Answer:
        url = self._base_url + path
        all_headers = {**self._headers, **headers} if headers else self._headers
        try:
            # Most calls succeed at once, and setting up tenacity costs about as much CPU as
            # aiohttp's whole request: it only steps in after a transient failure.
            return await self._attempt(operation, method, url, body, all_headers)
        except _TransientFailure as exc:
            first_failure: _TransientFailure | None = exc

        async def attempt() -> _Answer:
            nonlocal first_failure
            if first_failure is not None:
                # Tenacity counts, logs and backs off from the first attempt like any other.
                failure, first_failure = first_failure, None
                raise failure
            return await self._attempt(operation, method, url, body, all_headers)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_TransientFailure),
            sleep=self._sleep,
            before_sleep=lambda state: _log_retry(operation, state, self._max_attempts),
            reraise=True,
        )
        try:
            answer: _Answer = await retrying(attempt)
        except _TransientFailure as exc:
            # Only the attempt limit stops the retries, so reaching here means it was reached.
            attempts = self._max_attempts
            raise ClusterUnavailable(
                f"GPU cluster {operation} failed after {attempts} attempt"
                f"{'' if attempts == 1 else 's'}; last error: {exc.cause}"
            ) from exc
        return answer

    async def _attempt(
        self,
        operation: str,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> _Answer:
        try:
            async with self._session_now().request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                answer = _Answer(response.status, response.headers, await response.read())
        except aiohttp.ClientPayloadError as exc:
            if isinstance(exc.__cause__, ContentEncodingError):
                raise ClusterBadResponse(
                    f"GPU cluster answered {operation} with a body that cannot be decoded: "
                    f"{exc.__cause__.message}"
                ) from exc
            # The connection ended before the whole body arrived.
            raise _TransientFailure(f"ReadError: {exc}") from exc
        except TimeoutError as exc:
            raise _TransientFailure(
                f"{_timeout_kind(exc)} (connect timeout {self._connect_timeout:g} s, "
                f"read timeout {self._read_timeout:g} s)"
            ) from exc
        except aiohttp.ClientError as exc:
            raise _TransientFailure(_failure(exc)) from exc

        status = answer.status
        if status < 300:
            return answer
        code, message = _error_details(answer)
        described = f"HTTP {status} {answer.reason}".rstrip() + (f": {message}" if message else "")
        if status in _TRANSIENT_STATUSES:
            retry_after = retry_after_seconds(answer.headers) if status in (429, 503) else None
            raise _TransientFailure(described, retry_after)
        if status in _CREDENTIAL_STATUSES:
            raise ClusterUnavailable(
                f"GPU cluster refused the API key on {operation} ({described}); "
                "check GPU_CLUSTER_API_KEY"
            )
        if status < 400:
            raise ClusterBadResponse(f"GPU cluster answered {operation} with {described}")
        if status < 500:
            raise ClusterRejected(
                f"GPU cluster rejected {operation}: {message or described}",
                status_code=status,
                code=code,
            )
        raise ClusterUnavailable(f"GPU cluster failed {operation} with {described}")

    def _wait(self, state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, _TransientFailure) and failure.retry_after is not None:
            return min(failure.retry_after, self._retry_after_max)
        return self._backoff(state)


def _timeout_kind(exc: TimeoutError) -> str:
    """Which timeout expired, named as the logs have named it since the first adapter."""
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return "ReadTimeout"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "ConnectTimeout"
    return "Timeout"


def _failure(exc: aiohttp.ClientError) -> str:
    """What went wrong with the connection, in the words the logs have used since the first
    adapter: ``ConnectError`` (refused, unresolvable, TLS), ``RemoteProtocolError`` (an answer
    that is not HTTP), else aiohttp's own name for it."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"ConnectError: {exc}"
    if isinstance(exc, aiohttp.ClientResponseError):
        # Raised only for unparsable answers (raise_for_status is off); its status is made up.
        return f"RemoteProtocolError: {exc.message}"
    return f"{type(exc).__name__}: {exc or 'connection failed'}"


def _decode(answer: _Answer, model: type[_ModelT], operation: str) -> _ModelT:
    try:
        # One pass from bytes to the model, without an intermediate dict.
        return model.model_validate_json(answer.body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise ClusterBadResponse(
                f"GPU cluster answered {operation} with a body that is not JSON "
                f"(HTTP {answer.status}, {len(answer.body)} bytes)"
            ) from exc
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in errors[:3]
        )
        raise ClusterBadResponse(
            f"GPU cluster answered {operation} off contract: {problems}"
        ) from exc


def _only_newer(status: ClusterJobStatus, since_step: int) -> ClusterJobStatus:
    """Keep the history to the points after ``since_step``, in step order.

    The contract already promises this; enforcing it here means a lax backend cannot make the
    processor store a point twice or take an old point for the latest.
    """
    history = sorted((p for p in status.history if p.step > since_step), key=lambda p: p.step)
    if history == status.history:
        return status
    return status.model_copy(update={"history": history})


def _error_details(answer: _Answer) -> tuple[str | None, str | None]:
    """The ``(code, message)`` a cluster put in an error body, as far as it can be read.

    The contract's shape is ``{"error": {"code", "message"}}``; ``{"error": "..."}``,
    ``{"message": "..."}`` and ``{"detail": "..."}`` from gateways and frameworks are read too.
    """
    try:
        body = loads(answer.body)
    except ValueError:  # not JSON, or not UTF-8
        return None, None
    if not isinstance(body, dict):
        return None, None
    code: object = None
    message: object = None
    error = body.get("error")
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
    elif isinstance(error, str):
        message = error
    if not message:
        message = body.get("message") or body.get("detail")
    return (
        code if isinstance(code, str) and code else None,
        message if isinstance(message, str) and message else None,
    )


def _log_retry(operation: str, state: RetryCallState, max_attempts: int) -> None:
    failure = state.outcome.exception() if state.outcome is not None else None
    log.warning(
        "GPU cluster %s attempt %d of %d failed (%s); retrying in %.2f s",
        operation,
        state.attempt_number,
        max_attempts,
        failure,
        state.upcoming_sleep,
    )
