"""Benchmark: one processor cycle polling N running jobs through a slow cluster.

For N = 10, 100 and 1,000 running jobs, with the cluster simulator answering every request
after 50 ms, prints the cycle time, its ratio to a sequential poll (N x 50 ms) and what the
cycle sent to the database: gateway calls (one SQL function each) and the statements the
server saw for them (pg_stat_statements, top level, BEGIN/COMMIT and the role switch included).
Everything is real and local: PostgreSQL with the migrations, the simulator over HTTP, moto S3.

    .venv/bin/python -m bench.processor [--sizes 10,100,1000] [--latency 0.05] [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass

import httpx
import psycopg

from infra.local import postgres
from infra.local.processes import start_cluster_simulator
from infra.local.s3 import DEMO_DATASET_PATHS, LocalS3Server, create_buckets, seed_demo_datasets
from shared.cluster import RestTrainingCluster
from shared.db import DirectDatabase
from shared.processor import Processor, ProcessorOptions
from shared.storage import DatasetStorage, S3DatasetStorage

API_KEY = "bench-key"


@dataclass
class Result:
    jobs: int
    seconds: float
    polled: int
    calls: int
    statements: int


def _one(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()
    if row is None:
        raise RuntimeError(f"no row from {query}")
    return int(row[0])


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


async def _measure(
    admin: psycopg.Connection, processor: Processor, sim_url: str, n: int, latency: float
) -> Result:
    async with httpx.AsyncClient(base_url=sim_url) as control:
        await control.post("/_sim/config", json={"latency": 0})
        # Submit every job, then poll until all of them run.
        for _ in range(30):
            await processor.run_cycle()
            running = _one(admin, "select count(*) from training_jobs where status = 'running'")
            if running == n:
                break
            await asyncio.sleep(0.2)
        await control.post("/_sim/config", json={"latency": latency})
    admin.execute("select pg_stat_statements_reset()")
    started = time.perf_counter()
    summary = await processor.run_cycle()
    seconds = time.perf_counter() - started
    statements = _one(
        admin,
        "select coalesce(sum(calls), 0) from pg_stat_statements s"
        " join pg_roles r on r.oid = s.userid"
        " where r.rolname in ('authenticator', 'service_role')",
    )
    return Result(n, seconds, summary.polled, summary.statements, statements)


def _bench_size(
    server: postgres.LocalPostgres,
    storage: DatasetStorage,
    sim_url: str,
    n: int,
    latency: float,
    concurrency: int,
) -> Result:
    dbname = f"bench_{n}"
    postgres.create_database(server.conninfo(), dbname)
    postgres.apply_schema(server.conninfo(dbname))
    db = DirectDatabase(server.conninfo(dbname, postgres.APP_USER), max_size=4)
    options = ProcessorOptions(
        claim_batch_size=n,
        poll_batch_size=n,
        concurrency=concurrency,
        time_budget_seconds=600,
        poll_interval_seconds=0,
    )

    async def run() -> Result:
        cluster = RestTrainingCluster(sim_url, API_KEY, read_timeout=60)
        try:
            return await _measure(
                admin, Processor(db, cluster, storage, options), sim_url, n, latency
            )
        finally:
            await cluster.aclose()

    try:
        with psycopg.connect(server.conninfo(dbname), autocommit=True) as admin:
            admin.execute("create extension if not exists pg_stat_statements")
            _create_jobs(admin, n)
            return asyncio.run(run())
    finally:
        db.close()


def run(sizes: list[int], latency: float, concurrency: int) -> None:
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
            print(f"latency {latency * 1000:.0f} ms per cluster request, concurrency {concurrency}")
            print(
                f"{'jobs':>6} {'cycle s':>9} {'sequential s':>13} {'speed-up':>9}"
                f" {'db calls':>9} {'statements':>11}"
            )
            for n in sizes:
                result = _bench_size(server, storage, sim.base_url, n, latency, concurrency)
                if result.polled != n:
                    raise SystemExit(f"only {result.polled} of {n} jobs were polled")
                sequential = n * latency
                print(
                    f"{n:>6} {result.seconds:>9.3f} {sequential:>13.2f}"
                    f" {sequential / result.seconds:>8.1f}x {result.calls:>9}"
                    f" {result.statements:>11}"
                )
    finally:
        server.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=ProcessorOptions.concurrency)
    args = parser.parse_args()
    run([int(s) for s in args.sizes.split(",")], args.latency, args.concurrency)


if __name__ == "__main__":
    main()
