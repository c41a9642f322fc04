"""The REST adapter: a GPU cluster that speaks the JSON contract of DESIGN §6 over HTTPS.

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
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.cluster.models import CancelResult, ClusterJobStatus, SubmitRequest, SubmitResult
from shared.errors import ClusterBadResponse, ClusterRejected, ClusterUnavailable

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
_ModelT = TypeVar("_ModelT", bound=BaseModel)

_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_CREDENTIAL_STATUSES = frozenset({401, 403})
_USER_AGENT = "lora-runner"


class _TransientFailure(Exception):
    """One attempt failed in a way that a later attempt may not."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


class RestTrainingCluster:
    """A :class:`~shared.cluster.interface.TrainingCluster` reached over the REST contract.

    Pass ``client`` to share a connection pool (it is then left open by :meth:`aclose`), or
    ``transport`` to route requests through a test transport. ``sleep`` waits between attempts;
    tests pass one that records the delay instead of sleeping.
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
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required")
        if not api_key:
            raise ValueError("api_key is required")
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if client is not None and transport is not None:
            raise ValueError("pass either client or transport, not both")
        self._base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }
        # Writes carry a small JSON body, so they get the read budget; waiting for a pooled
        # connection gets it too, so a saturated pool surfaces as a (transient) timeout.
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=read_timeout
        )
        self._max_attempts = max_attempts
        self._retry_after_max = retry_after_max
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial
        )
        self._sleep = sleep
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(transport=transport)

    async def submit(self, request: SubmitRequest) -> SubmitResult:
        """Start a run, or find the one already started with the same idempotency key."""
        response = await self._call(
            "submit",
            "POST",
            "/training/submit",
            json=request.model_dump(mode="json"),
            # Gateways in front of a cluster often deduplicate on this header.
            headers={"Idempotency-Key": request.idempotency_key},
        )
        return _decode(response, SubmitResult, "submit")

    async def status(self, external_job_id: str, since_step: int = 0) -> ClusterJobStatus:
        """Read a run's state, with the metrics recorded after step ``since_step``."""
        if since_step < 0:
            raise ValueError("since_step must not be negative")
        response = await self._call(
            "status",
            "GET",
            f"/training/status/{quote(external_job_id, safe='')}",
            params={"since_step": since_step},
        )
        return _only_newer(_decode(response, ClusterJobStatus, "status"), since_step)

    async def cancel(self, external_job_id: str) -> CancelResult:
        """Stop a run; a run that has already ended stays as it is, and the answer says so."""
        response = await self._call(
            "cancel", "POST", f"/training/cancel/{quote(external_job_id, safe='')}"
        )
        return _decode(response, CancelResult, "cancel")

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

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        request = self._client.build_request(
            method,
            self._base_url + path,
            json=json,
            params=params,
            headers={**self._headers, **(headers or {})},
            timeout=self._timeout,
        )
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_TransientFailure),
            sleep=self._sleep,
            before_sleep=lambda state: _log_retry(operation, state, self._max_attempts),
            reraise=True,
        )
        try:
            response: httpx.Response = await retrying(self._attempt, operation, request)
        except _TransientFailure as exc:
            # Only the attempt limit stops the retries, so reaching here means it was reached.
            attempts = self._max_attempts
            raise ClusterUnavailable(
                f"GPU cluster {operation} failed after {attempts} attempt"
                f"{'' if attempts == 1 else 's'}; last error: {exc.cause}"
            ) from exc
        return response

    async def _attempt(self, operation: str, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._client.send(request)
        except httpx.TimeoutException as exc:
            raise _TransientFailure(
                f"{type(exc).__name__} (connect timeout {self._timeout.connect:g} s, "
                f"read timeout {self._timeout.read:g} s)"
            ) from exc
        except httpx.DecodingError as exc:
            raise ClusterBadResponse(
                f"GPU cluster answered {operation} with a body that cannot be decoded: {exc}"
            ) from exc
        except httpx.HTTPError as exc:
            raise _TransientFailure(f"{type(exc).__name__}: {exc or 'connection failed'}") from exc

        status = response.status_code
        if status < 300:
            return response
        code, message = _error_details(response)
        described = f"HTTP {status} {response.reason_phrase}" + (f": {message}" if message else "")
        if status in _TRANSIENT_STATUSES:
            retry_after = _retry_after(response) if status in (429, 503) else None
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


def _decode(response: httpx.Response, model: type[_ModelT], operation: str) -> _ModelT:
    try:
        payload = response.json()
    except ValueError as exc:
        raise ClusterBadResponse(
            f"GPU cluster answered {operation} with a body that is not JSON "
            f"(HTTP {response.status_code}, {len(response.content)} bytes)"
        ) from exc
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors()[:3]
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


def _error_details(response: httpx.Response) -> tuple[str | None, str | None]:
    """The ``(code, message)`` a cluster put in an error body, as far as it can be read.

    The contract's shape is ``{"error": {"code", "message"}}``; ``{"error": "..."}``,
    ``{"message": "..."}`` and ``{"detail": "..."}`` from gateways and frameworks are read too.
    """
    try:
        body = response.json()
    except ValueError:
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


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait according to ``Retry-After`` (delta-seconds or an HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


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
