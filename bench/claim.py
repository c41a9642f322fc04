"""How the fair claim's time grows with the depth of the queue.

Starts a throwaway PostgreSQL with the migrations and, for each size, a database with that many
queued jobs spread evenly over 1,000 users, with limits in force: every user already has one
active job and a default limit of 2, a fifth of the users have a limit of their own, and the
A100s are nearly full. It then times `processor_claim_queued` (a batch of 25), each call in a
transaction that is rolled back, so every sample sees the same queue. Prints the median and p95
per size, the database statements per claim (pg_stat_statements), and the ratio of the largest
size to the smallest (the goal: 100,000 queued jobs at most 3x 1,000).

    .venv/bin/python -m bench.claim [--sizes 1000,100000] [--samples 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import psycopg

from infra.local import postgres

USERS = 1_000
BATCH = 25
DEFAULT_USER_LIMIT = 2


def _fill(conninfo: str, queued: int) -> None:
    """1,000 users with a dataset and one running job each, and `queued` jobs round the users."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "insert into auth.users (id) select gen_random_uuid() from generate_series(1, %s)",
            (USERS,),
        )
        conn.execute(
            "insert into datasets (user_id, name, storage_path, training_ready)"
            " select id, 'bench', id || '/train.jsonl', true from auth.users"
        )
        conn.execute(
            "insert into training_jobs (user_id, dataset_id, gpu_config)"
            ' select d.user_id, d.id, \'{"gpu_type": "A100", "gpu_count": 1}\' from datasets d'
        )
        for status in ("initializing", "running"):
            conn.execute("update training_jobs set status = %s", (status,))
        conn.execute(
            "insert into training_jobs (user_id, dataset_id, gpu_config, created_at)"
            " select d.user_id, d.id,"
            '   case when n %% 3 = 0 then \'{"gpu_type": "L4", "gpu_count": 1}\'::jsonb'
            '        else \'{"gpu_type": "A100", "gpu_count": 1}\'::jsonb end,'
            "   now() - make_interval(secs => %s - n)"
            " from generate_series(1, %s) n"
            " join (select row_number() over (order by id) - 1 as i, id, user_id from datasets) d"
            "   on d.i = n %% %s",
            (queued, queued, USERS),
        )
        conn.execute(
            "insert into user_job_limits (user_id, max_active_jobs)"
            " select id, 4 from auth.users order by id limit %s",
            (USERS // 5,),
        )
        conn.execute(
            "update gpu_prices set max_active_jobs = %s where gpu_type = 'A100'", (USERS + 10,)
        )
        conn.execute("create extension if not exists pg_stat_statements")
        conn.execute("vacuum analyze")


def _time_claims(conninfo: str, samples: int) -> tuple[list[float], int, int]:
    """Claim durations in ms, the jobs one claim takes, and statements per claim."""
    durations = []
    claimed = 0
    with psycopg.connect(conninfo) as conn:
        conn.execute("set role service_role")
        conn.commit()
        for i in range(samples + 3):
            started = time.perf_counter()
            row = conn.execute(
                "select jsonb_array_length(processor_claim_queued(%s, %s, 60, %s))",
                (uuid.uuid4(), BATCH, DEFAULT_USER_LIMIT),
            ).fetchone()
            elapsed = (time.perf_counter() - started) * 1000
            conn.rollback()
            claimed = int(row[0]) if row else 0
            if i >= 3:  # warm-up: plans and caches
                durations.append(elapsed)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("select pg_stat_statements_reset()")
        conn.execute("set role service_role")
        conn.execute("begin")
        conn.execute(
            "select processor_claim_queued(%s, %s, 60, %s)",
            (uuid.uuid4(), BATCH, DEFAULT_USER_LIMIT),
        )
        conn.execute("rollback")
        conn.execute("reset role")
        row = conn.execute(
            "select count(*) from pg_stat_statements where query ilike '%processor_claim_queued%'"
        ).fetchone()
    return durations, claimed, int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    server = postgres.throwaway_cluster(
        {"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "top"}
    )
    server.start()
    medians = {}
    try:
        print(
            f"{'queued jobs':>12} {'users':>6} {'median':>9} {'p95':>9} {'claimed':>8} {'calls':>6}"
        )
        for size in sizes:
            dbname = f"bench_claim_{size}"
            postgres.create_database(server.conninfo(), dbname)
            postgres.apply_schema(server.conninfo(dbname))
            _fill(server.conninfo(dbname), size)
            durations, claimed, calls = _time_claims(server.conninfo(dbname), args.samples)
            medians[size] = statistics.median(durations)
            p95 = sorted(durations)[int(0.95 * (len(durations) - 1))]
            print(
                f"{size:>12,} {USERS:>6,} {medians[size]:>7.1f}ms {p95:>7.1f}ms"
                f" {claimed:>8} {calls:>6}"
            )
    finally:
        server.destroy()
    if len(sizes) > 1:
        ratio = medians[sizes[-1]] / medians[sizes[0]]
        print(f"ratio {sizes[-1]:,} / {sizes[0]:,} queued (median): {ratio:.2f} (goal: at most 3)")


if __name__ == "__main__":
    main()
