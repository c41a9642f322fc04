"""Faults the simulator can inject into its contract endpoints, so that tests and benchmarks can
watch the runner cope with a slow, failing, throttling or misbehaving cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Literal["submit", "status", "cancel"]

# The ASGI scope key under which exposing_connection_abort leaves a way to drop the connection.
_ABORT_CONNECTION = "sim.abort_connection"

_DEFAULT_SECONDS = {"latency": 0.05, "hang": 60.0}
_DISCONNECT_CHECK_SECONDS = 0.05
_ABORT_NOTICE_SECONDS = 1.0


class FaultRule(BaseModel):
    """One fault, injected into the next ``times`` matching requests (every one when unset).

    - ``latency``: answer normally, ``seconds`` late;
    - ``http_error``: answer ``status`` with the contract's error body (``code``, ``message``),
      plus ``Retry-After`` when ``retry_after`` is set;
    - ``rate_limit``: answer 429 with ``Retry-After: retry_after`` (1 when unset);
    - ``hang``: answer nothing for ``seconds`` (or until the client gives up), then normally;
    - ``malformed``: answer 200 with ``body``, which is not the contract's JSON;
    - ``refuse``: drop the connection without answering.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint: Endpoint | Literal["*"] = "*"
    kind: Literal["latency", "http_error", "rate_limit", "hang", "malformed", "refuse"]
    status: int = Field(default=503, ge=400, le=599)
    retry_after: int | str | None = None
    seconds: float | None = Field(default=None, ge=0)
    times: int | None = Field(default=None, ge=1)
    code: str = "injected_fault"
    message: str = "fault injected by the cluster simulator"
    body: str = '{"status": "runn'


@dataclass
class _ActiveRule:
    rule: FaultRule
    remaining: int | None


class FaultInjector:
    """The faults waiting to be injected, applied first-come first-served."""

    def __init__(self) -> None:
        self._rules: list[_ActiveRule] = []

    def add(self, rules: list[FaultRule]) -> None:
        self._rules.extend(_ActiveRule(rule, rule.times) for rule in rules)

    def clear(self) -> None:
        self._rules.clear()

    def take(self, endpoint: Endpoint) -> FaultRule | None:
        """The first rule for this endpoint, used up by one if it is counted."""
        for active in self._rules:
            if active.rule.endpoint in ("*", endpoint):
                if active.remaining is not None:
                    active.remaining -= 1
                    if active.remaining == 0:
                        self._rules.remove(active)
                return active.rule
        return None

    def describe(self) -> list[dict[str, object]]:
        return [
            {**active.rule.model_dump(), "remaining": active.remaining} for active in self._rules
        ]


def exposing_connection_abort(app: ASGIApp) -> ASGIApp:
    """Let the ``refuse`` fault drop a connection without answering.

    ASGI has no way to do that, so this reaches for the asyncio transport behind uvicorn's
    ``receive`` (its request cycle keeps it as ``transport``) before anything wraps ``receive``.
    """

    async def app_with_abort(scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(getattr(receive, "__self__", None), "transport", None)
        if scope["type"] == "http" and transport is not None:
            scope[_ABORT_CONNECTION] = transport.abort
        await app(scope, receive, send)

    return app_with_abort


async def inject(request: Request, rule: FaultRule) -> Response | None:
    """Apply a fault: the response to send instead of the real one, or None to carry on."""
    seconds = rule.seconds if rule.seconds is not None else _DEFAULT_SECONDS.get(rule.kind, 0.0)
    if rule.kind == "latency":
        await asyncio.sleep(seconds)
        return None
    if rule.kind == "hang":
        await _sleep_while_connected(request, seconds)
        return None
    if rule.kind == "rate_limit":
        return _error(rule, 429, rule.retry_after if rule.retry_after is not None else 1)
    if rule.kind == "http_error":
        return _error(rule, rule.status, rule.retry_after)
    if rule.kind == "malformed":
        return Response(rule.body, status_code=200, media_type="application/json")
    abort: Callable[[], None] | None = request.scope.get(_ABORT_CONNECTION)
    if abort is None:
        raise RuntimeError("this server cannot drop a connection; run the simulator with uvicorn")
    abort()
    # Once the server has noticed the connection is gone it drops whatever is answered, so the
    # response returned here is never sent.
    await _sleep_while_connected(request, _ABORT_NOTICE_SECONDS)
    return Response(status_code=499)


def _error(rule: FaultRule, status: int, retry_after: int | str | None) -> Response:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return JSONResponse(
        {"error": {"code": rule.code, "message": rule.message}}, status_code=status, headers=headers
    )


async def _sleep_while_connected(request: Request, seconds: float) -> None:
    # A hung request whose client has given up need not hold the server until it ends.
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        if await request.is_disconnected():
            return
        await asyncio.sleep(min(left, _DISCONNECT_CHECK_SECONDS))
