"""A GPU cluster on this machine that speaks the REST contract in openapi/cluster.yaml.

It downloads each dataset through its signed URL, derives the run's steps from it and produces
realistic loss, learning-rate, throughput and GPU curves at a configurable speed. A control API
under ``/_sim`` (no API key; the simulator only ever binds a local address) lets tests count what
arrived, change the pace, inject faults and fail a run mid-way.

    python -m infra.local.cluster_simulator --api-key KEY --port 8790 --steps-per-second 5

Contract endpoints (Bearer API key), described in ``openapi/cluster.yaml``:
``POST /training/submit``, ``GET /training/status/{id}?since_step=N``,
``POST /training/cancel/{id}``.

Control endpoints:

- ``GET /_sim/health``
- ``GET|POST /_sim/config``: ``{"steps_per_second", "init_seconds", "latency"}``; a run keeps the
  pace it was submitted with, ``latency`` delays every contract request
- ``GET /_sim/submissions``: ``{key: {"requests", "jobs_created", "external_job_id"}}``
- ``GET /_sim/requests``: contract requests received, by endpoint
- ``GET|POST|DELETE /_sim/faults``: see :class:`~infra.local.fault_injection.FaultRule`
- ``GET /_sim/jobs/{id}``: a run's state and its ``cancel_requests``
- ``POST /_sim/jobs/{id}/fail_at_step``: ``{"step", "code", "message"}``
- ``POST /_sim/reset``: forget every run, count and fault; back to the startup pace
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import hmac
import json
import os
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from infra.local.fault_injection import (
    Endpoint,
    FaultInjector,
    FaultRule,
    exposing_connection_abort,
    inject,
)
from infra.local.simulated_cluster import (
    DEFAULT_MAX_DOWNLOADS,
    Pacing,
    SimulatedCluster,
    SimulatedJob,
)
from infra.local.simulated_training import (
    MAX_GPU_COUNT,
    InvalidTrainingRequest,
    TrainingSettings,
)

Handler = Callable[[Request], Awaitable[Response]]

# The contract's bound on hyperparameters: their compact JSON takes at most this many bytes.
MAX_HYPERPARAMETERS_BYTES = 64 * 1024
_WHOLE_NUMBER = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulator starts; ``POST /_sim/reset`` comes back to this pacing."""

    api_key: str
    pacing: Pacing = dataclasses.field(default_factory=Pacing)
    # Per network operation (connect, each read); waiting for a download slot is not bounded.
    download_timeout: float = 30.0
    max_downloads: int = DEFAULT_MAX_DOWNLOADS


@dataclass
class _State:
    config: SimulatorConfig
    cluster: SimulatedCluster
    faults: FaultInjector


class _GpuConfigBody(BaseModel):
    model_config = ConfigDict(strict=True)

    gpu_type: str = Field(min_length=1, max_length=64)
    gpu_count: int = Field(ge=1, le=MAX_GPU_COUNT)


class _ArtifactTargetsBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    location: str = Field(min_length=1)
    upload_urls: dict[str, str] = Field(default_factory=dict)


class _SubmitBody(BaseModel):
    """A submission as the contract has it; anything else is refused with 422."""

    model_config = ConfigDict(strict=True)

    idempotency_key: str = Field(min_length=1, max_length=255)
    job_id: UUID
    dataset_url: str = Field(min_length=1)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    gpu_config: _GpuConfigBody
    artifacts: _ArtifactTargetsBody | None = None

    @field_validator("hyperparameters")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > MAX_HYPERPARAMETERS_BYTES:
            raise ValueError(
                f"hyperparameters take {size} bytes as JSON; at most "
                f"{MAX_HYPERPARAMETERS_BYTES} are allowed"
            )
        return value


class _PacingUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps_per_second: float | None = None
    init_seconds: float | None = None
    latency: float | None = None


class _FailAtStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=1)
    code: str = "training_failed"
    message: str = "CUDA out of memory while running the backward pass"


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    )


def _state(request: Request) -> _State:
    state: _State = request.app.state.simulator
    return state


def _job(request: Request) -> SimulatedJob:
    external_job_id = request.path_params["external_job_id"]
    job = _state(request).cluster.jobs.get(external_job_id)
    if job is None:
        raise HTTPException(404, f"no training job {external_job_id}")
    return job


def _contract(endpoint: Endpoint) -> Callable[[Handler], Handler]:
    """Count the request, then apply latency and faults, then check the API key.

    Faults come before the key check because they stand for the network and the gateway in
    front of a cluster, which fail whoever is calling.
    """

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            state = _state(request)
            state.cluster.requests[endpoint] += 1
            if endpoint == "submit":
                _count_submission(state.cluster, await request.body())
            if state.cluster.pacing.latency:
                await asyncio.sleep(state.cluster.pacing.latency)
            rule = state.faults.take(endpoint)
            if rule is not None and (injected := await inject(request, rule)) is not None:
                return injected
            scheme, _, key = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                key.encode(), state.config.api_key.encode()
            ):
                return _error(
                    401,
                    "unauthorized",
                    "a valid Bearer API key is required",
                    **{"WWW-Authenticate": "Bearer"},
                )
            return await handler(request)

        return guarded

    return decorate


def _count_submission(cluster: SimulatedCluster, raw: bytes) -> None:
    try:
        key = json.loads(raw).get("idempotency_key")
    except (ValueError, AttributeError):
        return
    if isinstance(key, str) and key:
        cluster.submission(key).requests += 1


@_contract("submit")
async def submit(request: Request) -> Response:
    try:
        body = _SubmitBody.model_validate_json(await request.body())
    except ValidationError as exc:
        return _error(422, "invalid_request", _describe(exc))
    cluster = _state(request).cluster
    job = cluster.find(body.idempotency_key)
    if job is not None:
        return JSONResponse({"external_job_id": job.external_job_id, "status": job.advance()[0]})
    try:
        settings = TrainingSettings.from_submission(
            body.hyperparameters, body.gpu_config.gpu_type, body.gpu_config.gpu_count
        )
    except InvalidTrainingRequest as exc:
        return _error(400, "invalid_hyperparameters", str(exc))
    job = cluster.start(
        idempotency_key=body.idempotency_key,
        dataset_url=body.dataset_url,
        settings=settings,
        job_id=str(body.job_id),
        artifact_location=None if body.artifacts is None else body.artifacts.location,
    )
    return JSONResponse({"external_job_id": job.external_job_id, "status": job.phase}, 201)


@_contract("status")
async def status(request: Request) -> Response:
    job = _job(request)
    raw = request.query_params.get("since_step", "0")
    try:
        # Digits only: int() would also take " 7", "+7" and "7_0".
        since_step = int(raw) if _WHOLE_NUMBER.fullmatch(raw) else -1
    except ValueError:  # more digits than int() converts
        since_step = -1
    if since_step < 0:
        return _error(400, "invalid_since_step", "since_step must be a non-negative integer")
    return JSONResponse(job.status_body(since_step))


@_contract("cancel")
async def cancel(request: Request) -> Response:
    job = _job(request)
    return JSONResponse({"external_job_id": job.external_job_id, "status": job.cancel()})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "jobs": len(_state(request).cluster.jobs)})


async def pacing(request: Request) -> Response:
    cluster = _state(request).cluster
    if request.method == "POST":
        try:
            update = _PacingUpdate.model_validate_json(await request.body())
            cluster.pacing = dataclasses.replace(
                cluster.pacing, **update.model_dump(exclude_none=True)
            )
        except (ValidationError, ValueError) as exc:
            return _error(400, "invalid_config", str(exc))
    return JSONResponse(dataclasses.asdict(cluster.pacing))


async def submissions(request: Request) -> Response:
    return JSONResponse(
        {
            key: {
                "requests": submission.requests,
                "jobs_created": 0 if submission.external_job_id is None else 1,
                "external_job_id": submission.external_job_id,
            }
            for key, submission in _state(request).cluster.submissions.items()
        }
    )


async def requests_seen(request: Request) -> Response:
    counts = _state(request).cluster.requests
    return JSONResponse({endpoint: counts[endpoint] for endpoint in ("submit", "status", "cancel")})


async def faults(request: Request) -> Response:
    injector = _state(request).faults
    if request.method == "POST":
        try:
            payload = json.loads(await request.body())
            payload = payload if isinstance(payload, list) else [payload]
            rules = [FaultRule.model_validate(rule) for rule in payload]
        except ValueError as exc:
            return _error(400, "invalid_fault", str(exc))
        injector.add(rules)
    elif request.method == "DELETE":
        injector.clear()
    return JSONResponse({"faults": injector.describe()})


async def job_details(request: Request) -> Response:
    job = _job(request)
    state, step = job.advance()
    return JSONResponse(
        {
            "external_job_id": job.external_job_id,
            "idempotency_key": job.idempotency_key,
            "status": state,
            "current_step": step,
            "total_steps": job.plan.total_steps if job.plan else None,
            "training_pairs": job.plan.training_pairs if job.plan else None,
            "steps_per_second": job.steps_per_second,
            "cancel_requests": job.cancel_requests,
        }
    )


async def fail_at_step(request: Request) -> Response:
    job = _job(request)
    try:
        failure = _FailAtStep.model_validate_json(await request.body())
    except ValidationError as exc:
        return _error(400, "invalid_request", _describe(exc))
    try:
        job.fail_at_step(failure.step, failure.code, failure.message)
    except ValueError as exc:
        return _error(409, "too_late", str(exc))
    return JSONResponse({"external_job_id": job.external_job_id, "fail_at_step": failure.step})


async def reset(request: Request) -> Response:
    state = _state(request)
    state.faults.clear()
    state.cluster.reset(dataclasses.replace(state.config.pacing))
    return JSONResponse({"status": "reset"})


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors (unknown path, wrong method) in the contract's error shape."""
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
    # 405 carries Allow, naming the methods the endpoint takes.
    return _error(exc.status_code, code, exc.detail, **(exc.headers or {}))


def create_app(config: SimulatorConfig) -> ASGIApp:
    """The simulator as an ASGI application, for uvicorn."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The cluster bounds its downloads with a semaphore that waits; the connection pool must
        # not bound them again with a pool timeout, which would fail runs for the simulator's own
        # capacity rather than for anything a real cluster would fail them for.
        timeout = httpx.Timeout(config.download_timeout, pool=None)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=config.max_downloads)
        async with httpx.AsyncClient(
            timeout=timeout, limits=limits, follow_redirects=True
        ) as downloads:
            cluster = SimulatedCluster(
                dataclasses.replace(config.pacing), downloads, config.max_downloads
            )
            app.state.simulator = _State(config, cluster, FaultInjector())
            yield
            cluster.stop_downloads()

    app = Starlette(
        routes=[
            Route("/training/submit", submit, methods=["POST"]),
            Route("/training/status/{external_job_id}", status, methods=["GET"]),
            Route("/training/cancel/{external_job_id}", cancel, methods=["POST"]),
            Route("/_sim/health", health, methods=["GET"]),
            Route("/_sim/config", pacing, methods=["GET", "POST"]),
            Route("/_sim/submissions", submissions, methods=["GET"]),
            Route("/_sim/requests", requests_seen, methods=["GET"]),
            Route("/_sim/faults", faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/jobs/{external_job_id}", job_details, methods=["GET"]),
            Route("/_sim/jobs/{external_job_id}/fail_at_step", fail_at_step, methods=["POST"]),
            Route("/_sim/reset", reset, methods=["POST"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    return exposing_connection_abort(app)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.cluster_simulator",
        description="A local GPU cluster that speaks the LoRA runner's REST contract.",
    )
    parser.add_argument("--host", default=os.environ.get("CLUSTER_SIM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CLUSTER_SIM_PORT", 8790)))
    parser.add_argument(
        "--fd",
        type=int,
        help="serve on this already listening socket instead of --host/--port",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("CLUSTER_SIM_API_KEY") or os.environ.get("GPU_CLUSTER_API_KEY"),
        help="the Bearer key clients must send (env CLUSTER_SIM_API_KEY or GPU_CLUSTER_API_KEY)",
    )
    for flag, env, default, meaning in (
        ("--steps-per-second", "CLUSTER_SIM_STEPS_PER_SECOND", 5.0, "training steps a second"),
        ("--init-seconds", "CLUSTER_SIM_INIT_SECONDS", 2.0, "initialization after the download"),
        ("--latency", "CLUSTER_SIM_LATENCY", 0.0, "seconds added to every contract request"),
    ):
        value = float(os.environ.get(env, default))
        parser.add_argument(flag, type=float, default=value, help=f"{meaning} (env {env})")
    parser.add_argument(
        "--download-timeout",
        type=float,
        default=float(os.environ.get("CLUSTER_SIM_DOWNLOAD_TIMEOUT", 30.0)),
        help="seconds a dataset download may wait to connect or for data "
        "(env CLUSTER_SIM_DOWNLOAD_TIMEOUT)",
    )
    parser.add_argument(
        "--max-downloads",
        type=int,
        default=int(os.environ.get("CLUSTER_SIM_MAX_DOWNLOADS", DEFAULT_MAX_DOWNLOADS)),
        help="dataset downloads at once; further runs wait, queued (env CLUSTER_SIM_MAX_DOWNLOADS)",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("an API key is required: --api-key or CLUSTER_SIM_API_KEY")
    if args.download_timeout <= 0 or args.max_downloads < 1:
        parser.error("--download-timeout must be positive and --max-downloads at least 1")
    try:
        pacing = Pacing(args.steps_per_second, args.init_seconds, args.latency)
    except ValueError as exc:
        parser.error(str(exc))

    config = SimulatorConfig(
        api_key=args.api_key,
        pacing=pacing,
        download_timeout=args.download_timeout,
        max_downloads=args.max_downloads,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=args.host,
            port=args.port,
            http="h11",
            log_level=args.log_level,
            access_log=False,
            # Hung requests must not hold a stopping simulator for long.
            timeout_graceful_shutdown=1,
        )
    )
    server.run(sockets=None if args.fd is None else [socket.socket(fileno=args.fd)])


if __name__ == "__main__":
    main()
