"""What one poll of a Ray job costs the Ray adapter, by the length of the job's log.

Runs a job per size on a Ray head (a local one from ``infra.local.ray_head`` unless ``--url``
names one) whose trainer logs that many steps and then stays running, caught up; then times
``status(job, since_step=<last step>)``, the processor's poll of a caught-up run, and counts the
bytes it moves through a counting TCP relay between the adapter and Ray (both directions,
headers and the websocket included). The naive alternative, the whole log per poll, is measured
alongside. The goal: the 10,000-step poll costs at most twice the 1,000-step one.

    .venv/bin/python -m bench.ray_poll [--polls 30] [--sizes 1000 10000]

:func:`measure_poll_cost` is the reusable part (``bench/trainer.py`` can run it with the real
trainer's entrypoint).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from shared.cluster import ClusterJobState, GpuConfig, RayJobsCluster, SubmitRequest

FAKE_TRAINER = "python -m tests.ray.fake_trainer"
SIZES = (1_000, 10_000)
HOLD_SECONDS = 600.0


@dataclass(frozen=True)
class PollCost:
    """One log size's cost per poll: the adapter's, and reading the whole log instead."""

    steps: int
    log_bytes: int
    polls: int
    ms_p50: float
    ms_p95: float
    bytes_per_poll: int
    requests_per_poll: float
    full_log_ms_p50: float
    full_log_bytes: int


class _CountingRelay:
    """A TCP relay on 127.0.0.1 that forwards to ``upstream`` and counts the bytes both ways."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self.bytes = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        """Stop listening and end every relayed connection, letting each relay task finish."""
        if self._server is not None:
            self._server.close()
        for writer in self._open:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._open.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    self.bytes += len(data)
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()
                self._open.discard(dst)

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


@contextlib.asynccontextmanager
async def _relay_to(url: str) -> AsyncIterator[_CountingRelay]:
    upstream = httpx.URL(url)
    relay = _CountingRelay(upstream.host, upstream.port or 80)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


def _request(steps: int, gpu_type: str) -> SubmitRequest:
    return SubmitRequest(
        idempotency_key=f"bench-{uuid.uuid4()}",
        job_id=uuid.uuid4(),
        dataset_url="https://datasets.invalid/bench.jsonl",
        hyperparameters={"fake": {"steps": steps, "hold_seconds": HOLD_SECONDS}},
        gpu_config=GpuConfig(gpu_type=gpu_type, gpu_count=1),
    )


async def measure_poll_cost(
    url: str,
    token: str,
    *,
    sizes: Sequence[int] = SIZES,
    polls: int = 30,
    entrypoint: str = FAKE_TRAINER,
    tail_lines: int = 200,
    gpu_type: str = "A100",
    request_for: Any = None,
) -> list[PollCost]:
    """Each size's cost per caught-up poll, measured on the Ray head at ``url``.

    ``request_for(steps)`` makes the submission for a size (default: the fake trainer's, which
    logs ``steps`` steps and then holds); the job must end up running with its last step logged.
    """
    make_request = request_for or (lambda steps: _request(steps, gpu_type))
    costs = []
    requests = _RequestCounter()
    async with (
        _relay_to(url) as relay,
        httpx.AsyncClient(event_hooks={"request": [requests]}) as client,
        RayJobsCluster(
            relay.url,
            token,
            entrypoint=entrypoint,
            tail_lines=tail_lines,
            read_timeout=30.0,
            client=client,
        ) as cluster,
    ):
        for steps in sizes:
            submitted = await cluster.submit(make_request(steps))
            job = submitted.external_job_id
            try:
                costs.append(await _measure_one(cluster, relay, requests, job, steps, polls, token))
            finally:
                await cluster.cancel(job)
    return costs


class _RequestCounter:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, request: httpx.Request) -> None:
        self.count += 1


async def _measure_one(
    cluster: RayJobsCluster,
    relay: _CountingRelay,
    requests: _RequestCounter,
    job: str,
    steps: int,
    polls: int,
    token: str,
) -> PollCost:
    deadline = time.monotonic() + 300
    while True:
        status = await cluster.status(job, since_step=steps)
        if status.status is ClusterJobState.RUNNING and status.current_step == steps:
            break
        if status.status.is_terminal or time.monotonic() > deadline:
            raise RuntimeError(f"the benchmark job ended or stalled: {status.status}")
        await asyncio.sleep(0.5)
    times, sizes = [], []
    requests_before = requests.count
    for _ in range(polls):
        before = relay.bytes
        started = time.perf_counter()
        status = await cluster.status(job, since_step=steps)
        times.append((time.perf_counter() - started) * 1000)
        sizes.append(relay.bytes - before)
        assert status.history == [] and status.total_steps == steps  # noqa: S101, PT018
    requests_per_poll = (requests.count - requests_before) / polls
    full_times, full_bytes = [], 0
    async with httpx.AsyncClient(
        base_url=relay.url, headers={"Authorization": f"Bearer {token}"}, timeout=60.0
    ) as client:
        for _ in range(max(3, polls // 5)):
            before = relay.bytes
            started = time.perf_counter()
            response = await client.get(f"/api/jobs/{job}/logs")
            response.json()
            full_times.append((time.perf_counter() - started) * 1000)
            full_bytes = relay.bytes - before
        log_bytes = len(response.json()["logs"].encode())
    return PollCost(
        steps=steps,
        log_bytes=log_bytes,
        polls=polls,
        ms_p50=statistics.median(times),
        ms_p95=statistics.quantiles(times, n=20)[-1] if len(times) >= 2 else times[0],
        bytes_per_poll=int(statistics.median(sizes)),
        requests_per_poll=requests_per_poll,
        full_log_ms_p50=statistics.median(full_times),
        full_log_bytes=full_bytes,
    )


def report(costs: Sequence[PollCost]) -> str:
    """The figures as a table, and the largest size's cost against the smallest's."""
    rows = [
        f"{'steps':>7} {'log':>9} {'poll p50':>9} {'poll p95':>9} {'poll bytes':>10} "
        f"{'requests':>8} {'whole log p50':>13} {'whole log bytes':>15}"
    ]
    rows += [
        f"{c.steps:>7,} {c.log_bytes / 1e6:>7.2f}MB {c.ms_p50:>7.1f}ms {c.ms_p95:>7.1f}ms "
        f"{c.bytes_per_poll:>10,} {c.requests_per_poll:>8.1f} {c.full_log_ms_p50:>11.1f}ms "
        f"{c.full_log_bytes:>15,}"
        for c in costs
    ]
    if len(costs) >= 2:
        small, large = costs[0], costs[-1]
        rows.append(
            f"{large.steps:,} vs {small.steps:,} steps: {large.ms_p50 / small.ms_p50:.2f}x the "
            f"time, {large.bytes_per_poll / small.bytes_per_poll:.2f}x the bytes per poll "
            "(goal: at most 2x)"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="a Ray dashboard to use (default: start a local head)")
    parser.add_argument("--token", default="bench-ray-token")
    parser.add_argument("--polls", type=int, default=30)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--tail-lines", type=int, default=200)
    args = parser.parse_args(argv)

    def run(url: str) -> list[PollCost]:
        return asyncio.run(
            measure_poll_cost(
                url, args.token, sizes=args.sizes, polls=args.polls, tail_lines=args.tail_lines
            )
        )

    if args.url:
        costs = run(args.url)
    else:
        from infra.local.ray_head import start_ray_head

        started = time.monotonic()
        with start_ray_head(token=args.token) as head:
            print(f"Ray head started in {time.monotonic() - started:.1f} s", file=sys.stderr)
            costs = run(head.dashboard_url)
    print(report(costs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
