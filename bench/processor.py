"""Benchmark: one processor cycle polling N running jobs through a slow cluster.

For N = 10, 100 and 1,000 running jobs, with the cluster simulator answering every request
after 50 ms, prints the cycle time (the median of ``--repeat`` cycles, and their range), its
ratio to a sequential poll (N x 50 ms), where the cycle's time went and what it sent to the
database:

- ``cluster s``: from the first cluster call's start to the last one's end (the poll phase);
- ``sql s``: the time PostgreSQL spent executing the cycle's statements (pg_stat_statements);
- ``cpu s``: CPU time of this process (the processor: HTTP client, JSON, database driver) and
  of the simulator during the cycle;
- gateway calls (one SQL function each) and the statements the server saw for them
  (pg_stat_statements, top level, BEGIN/COMMIT and the role switch included).

Each measured cycle gets a new cluster client, as each call of process-training-jobs does, so
its connection pool (bounded by the concurrency) starts empty. Everything is real and local:
PostgreSQL with the migrations, the simulator over HTTP, moto S3.

    .venv/bin/python -m bench.processor [--sizes 10,100,1000] [--latency 0.05]
        [--concurrency N] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg

from infra.local import postgres
from infra.local.processes import start_cluster_simulator
from infra.local.s3 import DEMO_DATASET_PATHS, LocalS3Server, create_buckets, seed_demo_datasets
from shared.cluster import (
    CancelResult,
    ClusterJobStatus,
    RestTrainingCluster,
    SubmitRequest,
    SubmitResult,
    TrainingCluster,
)
from shared.config import ProcessorSettings
from shared.db import DirectDatabase
from shared.processor import Processor
from shared.storage import S3DatasetStorage

API_KEY = "bench-key"
_T = TypeVar("_T")

# The statements of the processor's roles, and the time the server spent executing them.
_APP_STATEMENTS = (
    "select coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0) / 1000"
    " from pg_stat_statements s join pg_roles r on r.oid = s.userid"
    " where r.rolname in ('authenticator', 'service_role')"
)


@dataclass
class Cycle:
    seconds: float
    cluster_seconds: float
    sql_seconds: float
    processor_cpu: float
    simulator_cpu: float
    polled: int
    calls: int
    statements: int


@dataclass
class Result:
    jobs: int
    cycles: list[Cycle] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(float(getattr(cycle, attribute)) for cycle in self.cycles)


class _TimedCluster:
    """A cluster that notes when its first call started and its last call ended."""

    def __init__(self, cluster: TrainingCluster) -> None:
        self._cluster = cluster
        self._first: float | None = None
        self._last: float | None = None

    @property
    def span(self) -> float:
        return 0.0 if self._first is None or self._last is None else self._last - self._first

    async def _timed(self, call: Awaitable[_T]) -> _T:
        if self._first is None:
            self._first = time.perf_counter()
        try:
            return await call
        finally:
            self._last = time.perf_counter()

    async def submit(self, request: SubmitRequest) -> SubmitResult:
        return await self._timed(self._cluster.submit(request))

    async def status(self, external_job_id: str, since_step: int = 0) -> ClusterJobStatus:
        return await self._timed(self._cluster.status(external_job_id, since_step))

    async def cancel(self, external_job_id: str) -> CancelResult:
        return await self._timed(self._cluster.cancel(external_job_id))

    async def aclose(self) -> None:
        await self._cluster.aclose()


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _row(conn: psycopg.Connection, query: str) -> tuple[float, ...]:
    row = conn.execute(query).fetchone()
    if row is None:
        raise RuntimeError(f"no row from {query}")
    return tuple(float(value) for value in row)


def _create_jobs(conn: psycopg.Connection, n: int) -> None:
    user_id = uuid.uuid4()
    conn.execute("insert into auth.users (id) values (%s)", (user_id,))
    conn.execute(
        "with d as (insert into datasets (user_id, name, storage_path)"
        " values (%s, 'bench', %s) returning id)"
        " insert into training_jobs (user_id, dataset_id)"
        " select %s, d.id from d, generate_series(1, %s)",
        (user_id, DEMO_DATASET_PATHS["lora-datasets"], user_id, n),
    )


@dataclass
class _Bench:
    admin: psycopg.Connection
    db: DirectDatabase
    storage: S3DatasetStorage
    settings: ProcessorSettings
    sim_url: str
    sim_pid: int

    def cluster(self) -> RestTrainingCluster:
        # As shared.services.cluster wires it for the processor: the pool holds at most as many
        # connections as the cycle has calls in flight.
        return RestTrainingCluster(
            self.sim_url,
            API_KEY,
            read_timeout=60,
            max_connections=self.settings.processor_concurrency,
        )

    async def cycle(self) -> Cycle:
        """One measured cycle, with a new cluster client."""
        cluster = _TimedCluster(self.cluster())
        processor = Processor(self.db, cluster, self.storage, self.settings)
        self.admin.execute("select pg_stat_statements_reset()")
        simulator_cpu = _cpu_seconds(self.sim_pid)
        processor_cpu = time.process_time()
        started = time.perf_counter()
        try:
            summary = await processor.run_cycle()
        finally:
            seconds = time.perf_counter() - started
            processor_cpu = time.process_time() - processor_cpu
            simulator_cpu = _cpu_seconds(self.sim_pid) - simulator_cpu
            await cluster.aclose()
        statements, sql_seconds = _row(self.admin, _APP_STATEMENTS)
        return Cycle(
            seconds=seconds,
            cluster_seconds=cluster.span,
            sql_seconds=sql_seconds,
            processor_cpu=processor_cpu,
            simulator_cpu=simulator_cpu,
            polled=summary.polled,
            calls=summary.statements,
            statements=int(statements),
        )

    async def run(self, n: int, latency: float, repeat: int) -> Result:
        async with httpx.AsyncClient(base_url=self.sim_url) as control:
            await control.post("/_sim/config", json={"latency": 0})
            # Submit every job, then poll until all of them run.
            cluster = self.cluster()
            try:
                processor = Processor(self.db, cluster, self.storage, self.settings)
                for _ in range(30):
                    await processor.run_cycle()
                    running = _row(
                        self.admin, "select count(*) from training_jobs where status = 'running'"
                    )[0]
                    if running == n:
                        break
                    await asyncio.sleep(0.2)
            finally:
                await cluster.aclose()
            await control.post("/_sim/config", json={"latency": latency})
        result = Result(n)
        for _ in range(repeat):
            result.cycles.append(await self.cycle())
        return result


def _bench_size(
    server: postgres.LocalPostgres,
    storage: S3DatasetStorage,
    sim_url: str,
    sim_pid: int,
    n: int,
    latency: float,
    concurrency: int,
    repeat: int,
) -> Result:
    dbname = f"bench_{n}"
    postgres.create_database(server.conninfo(), dbname)
    postgres.apply_schema(server.conninfo(dbname))
    db = DirectDatabase(server.conninfo(dbname, postgres.APP_USER), max_size=4)
    settings = ProcessorSettings(
        processor_trust_platform_auth=True,
        processor_claim_batch_size=n,
        processor_poll_batch_size=n,
        processor_concurrency=concurrency,
        processor_time_budget_seconds=600,
        processor_poll_interval_seconds=0,
        # The jobs are one user's: the bench measures polling, not fair queueing.
        processor_max_active_jobs_per_user=n,
    )
    try:
        with psycopg.connect(server.conninfo(dbname), autocommit=True) as admin:
            admin.execute("create extension if not exists pg_stat_statements")
            _create_jobs(admin, n)
            bench = _Bench(admin, db, storage, settings, sim_url, sim_pid)
            return asyncio.run(bench.run(n, latency, repeat))
    finally:
        db.close()


def run(sizes: list[int], latency: float, concurrency: int, repeat: int) -> None:
    server = postgres.throwaway_cluster({"shared_preload_libraries": "pg_stat_statements"})
    server.start()
    try:
        with (
            LocalS3Server() as s3,
            start_cluster_simulator(api_key=API_KEY, steps_per_second=0.01, init_seconds=0) as sim,
        ):
            client = s3.client()
            create_buckets(client)
            seed_demo_datasets(client)
            storage = S3DatasetStorage(client)
            print(
                f"latency {latency * 1000:.0f} ms per cluster request, concurrency {concurrency},"
                f" median of {repeat} cycles on {os.cpu_count()} cores"
            )
            print(
                f"{'jobs':>6} {'cycle s':>8} {'(range)':>13} {'sequential s':>13}"
                f" {'speed-up':>9} {'cluster s':>10} {'sql s':>6} {'cpu s':>6}"
                f" {'sim cpu s':>10} {'db calls':>9} {'statements':>11}"
            )
            for n in sizes:
                result = _bench_size(
                    server, storage, sim.base_url, sim.process.pid, n, latency, concurrency, repeat
                )
                short = [cycle.polled for cycle in result.cycles if cycle.polled != n]
                if short:
                    raise SystemExit(f"a cycle polled only {short[0]} of {n} jobs")
                sequential = n * latency
                seconds = result.median("seconds")
                fastest = min(cycle.seconds for cycle in result.cycles)
                slowest = max(cycle.seconds for cycle in result.cycles)
                print(
                    f"{n:>6} {seconds:>8.3f} {f'({fastest:.3f}-{slowest:.3f})':>13}"
                    f" {sequential:>13.2f} {sequential / seconds:>8.1f}x"
                    f" {result.median('cluster_seconds'):>10.3f}"
                    f" {result.median('sql_seconds'):>6.3f}"
                    f" {result.median('processor_cpu'):>6.2f}"
                    f" {result.median('simulator_cpu'):>10.2f}"
                    f" {result.median('calls'):>9.0f} {result.median('statements'):>11.0f}"
                )
    finally:
        server.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=ProcessorSettings.model_fields["processor_concurrency"].default,
    )
    parser.add_argument("--repeat", type=int, default=5, help="measured cycles per size")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    run([int(s) for s in args.sizes.split(",")], args.latency, args.concurrency, args.repeat)


if __name__ == "__main__":
    main()
