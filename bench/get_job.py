"""How get-job's latency grows with the length of a job's metrics series.

Starts a throwaway PostgreSQL with the migrations, writes three running jobs with 1,000, 100,000
and 1,000,000 metrics points, serves get-job with functions-framework, and times GET requests
with max_points=500 through HTTP, as the monitor page makes them. Prints p50 and p95 per size,
the response size, and the ratio of the 1,000,000-point case to the 1,000-point one (the goal:
at most 3, since downsampling reads rollups, not every point).

    .venv/bin/python -m bench.get_job [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from pathlib import Path

import httpx
import jwt
import psycopg

from infra.local import postgres
from infra.local.processes import start_function

SIZES = (1_000, 100_000, 1_000_000)
MAX_POINTS = 500
WARMUP_REQUESTS = 20
# Signs the benchmark's own token for its throwaway database; protects nothing.
JWT_SECRET = "benchmark-jwt-secret-0123456789abcdef0123456789"  # noqa: S105


def insert_returning_id(conn: psycopg.Connection, query: str, params: tuple[object, ...]) -> object:
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise RuntimeError(f"no id returned by: {query}")
    return row[0]


def make_jobs(conninfo: str) -> tuple[uuid.UUID, dict[int, uuid.UUID]]:
    """A user and one running job per size, with a noisy falling loss curve."""
    user_id = uuid.uuid4()
    jobs = {}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s)", (user_id,))
        dataset_id = insert_returning_id(
            conn,
            "insert into datasets (user_id, name, storage_path, training_ready)"
            " values (%s, 'bench', 'bench.jsonl', true) returning id",
            (user_id,),
        )
        for size in SIZES:
            job_id = insert_returning_id(
                conn,
                "insert into training_jobs (user_id, dataset_id, total_steps) values (%s, %s, %s)"
                " returning id",
                (user_id, dataset_id, size),
            )
            for status in ("initializing", "running"):
                conn.execute("update training_jobs set status = %s where id = %s", (status, job_id))
            started = time.perf_counter()
            conn.execute(
                "insert into metrics_points (job_id, step, epoch, training_loss, validation_loss,"
                " learning_rate, throughput, gpu_utilization, gpu_memory)"
                " select %(job)s, s, s * 3 / %(n)s, 2.4 * exp(-4.0 * s / %(n)s) + 0.1"
                "   + 0.05 * sin(s / 7.0), 2.5 * exp(-4.0 * s / %(n)s) + 0.12, 0.0002,"
                "   1450 + 30 * sin(s / 50.0), 92 + 3 * sin(s / 30.0), 38.5"
                " from generate_series(1, %(n)s) s",
                {"job": job_id, "n": size},
            )
            print(f"wrote {size:>9,} points in {time.perf_counter() - started:5.1f} s", flush=True)
            jobs[size] = uuid.UUID(str(job_id))
        conn.execute("vacuum analyze")
    return user_id, jobs


def percentile(samples: list[float], fraction: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[round(fraction * 100) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per size")
    args = parser.parse_args()

    server = postgres.throwaway_cluster()
    server.start()
    try:
        postgres.create_database(server.conninfo(), "bench")
        postgres.apply_schema(server.conninfo("bench"))
        user_id, jobs = make_jobs(server.conninfo("bench"))
        token = jwt.encode(
            {
                "sub": str(user_id),
                "aud": "authenticated",
                "role": "authenticated",
                "exp": int(time.time()) + 3600,
            },
            JWT_SECRET,
            algorithm="HS256",
        )
        env = {
            "DATABASE_URL": server.conninfo("bench", user=postgres.APP_USER),
            "SUPABASE_JWT_SECRET": JWT_SECRET,
        }
        source = Path(__file__).resolve().parents[1] / "functions" / "get_job" / "main.py"
        with (
            start_function(source, "get_job", env=env) as function,
            httpx.Client(
                base_url=function.base_url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ) as http,
        ):
            results = {}
            for size, job_id in jobs.items():
                url = f"/{job_id}?max_points={MAX_POINTS}"
                for _ in range(WARMUP_REQUESTS):
                    http.get(url).raise_for_status()
                timings = []
                for _ in range(args.requests):
                    started = time.perf_counter()
                    response = http.get(url)
                    timings.append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
                points = len(response.json()["data"]["metrics"])
                results[size] = (
                    percentile(timings, 0.50),
                    percentile(timings, 0.95),
                    len(response.content),
                    points,
                )
    finally:
        server.destroy()

    print(f"\nget-job over HTTP, max_points={MAX_POINTS}, {args.requests} requests per size")
    print(f"{'points stored':>14} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>9} {'points sent':>12}")
    for size, (p50, p95, size_bytes, points) in results.items():
        print(f"{size:>14,} {p50:>8.1f} {p95:>8.1f} {size_bytes:>9,} {points:>12}")
    small, large = results[SIZES[0]], results[SIZES[-1]]
    print(
        f"\nratio {SIZES[-1]:,} / {SIZES[0]:,} points: p50 {large[0] / small[0]:.2f},"
        f" p95 {large[1] / small[1]:.2f} (goal: at most 3)"
    )


if __name__ == "__main__":
    main()
