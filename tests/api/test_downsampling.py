"""The metrics series, downsampled in the database: shape kept, size bounded, rollups exact."""

from __future__ import annotations

import itertools
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from shared.db import DirectDatabase, UserContext
from shared.models import JobStatus
from tests.api.conftest import Api
from tests.api.tokens import SigningKey, user_claims
from tests.conftest import ClonedDatabase
from tests.factories import claims_for, make_job, make_user

LONG_SERIES = 100_000
SPIKE_STEP = 61_234
SPIKE_LOSS = 9.5
DIP_STEP = 7_777
DIP_LOSS = -1.0


@dataclass(frozen=True)
class LongJob:
    job_id: uuid.UUID
    token: str


@pytest.fixture(scope="session")
def long_job(api_admin: psycopg.Connection, es256_key: SigningKey) -> LongJob:
    """A running job with 100,000 points of a smoothly falling loss, one spike and one dip,
    written in one statement the way a bulk of processor batches would land."""
    user_id = make_user(api_admin)
    job_id = make_job(api_admin, user_id, status=JobStatus.RUNNING)
    api_admin.execute(
        "insert into metrics_points (job_id, step, epoch, training_loss, learning_rate,"
        " throughput, gpu_utilization, gpu_memory)"
        " select %(job)s, s, s / 10000,"
        "  case s when %(spike)s then %(spike_loss)s when %(dip)s then %(dip_loss)s"
        "         else 2.5 * exp(-s / 20000.0) + 0.1 end,"
        "  0.0002, 1400 + s %% 7, 90, 38"
        " from generate_series(1, %(n)s) s",
        {
            "job": job_id,
            "n": LONG_SERIES,
            "spike": SPIKE_STEP,
            "spike_loss": SPIKE_LOSS,
            "dip": DIP_STEP,
            "dip_loss": DIP_LOSS,
        },
    )
    return LongJob(job_id, es256_key.sign(user_claims(user_id)))


def series(api: Api, job: LongJob, **params: str) -> list[dict[str, float]]:
    response = api.get(job.job_id, job.token, params=params)
    assert response.status_code == 200, response.text
    points: list[dict[str, float]] = response.json()["data"]["metrics"]
    return points


def test_long_series_keeps_its_shape_in_500_points(api: Api, long_job: LongJob) -> None:
    """100,000 points come back as at most 500, in step order, with the first and last points,
    the single spike and the single dip, spread over the whole run."""
    points = series(api, long_job, max_points="500")
    steps = [p["step"] for p in points]

    assert len(points) <= 500
    assert len(points) > 400, "the budget is used, not just the ends"
    assert steps == sorted(set(steps))
    assert steps[0] == 1
    assert steps[-1] == LONG_SERIES
    by_step = {p["step"]: p for p in points}
    assert by_step[SPIKE_STEP]["training_loss"] == SPIKE_LOSS
    assert by_step[DIP_STEP]["training_loss"] == DIP_LOSS
    assert max(b - a for a, b in itertools.pairwise(steps)) <= 4 * LONG_SERIES / 249


def test_downsampled_points_are_real_points(api: Api, long_job: LongJob) -> None:
    """Downsampling picks stored points with all their values; it never averages or invents."""
    for point in series(api, long_job, max_points="50"):
        step = int(point["step"])
        expected = SPIKE_LOSS if step == SPIKE_STEP else DIP_LOSS if step == DIP_STEP else None
        if expected is None:
            expected = 2.5 * math.exp(-step / 20000.0) + 0.1
        assert point["training_loss"] == pytest.approx(expected)
        assert point["throughput"] == 1400 + step % 7
        assert point["epoch"] == step // 10000


@pytest.mark.parametrize("max_points", [2, 3, 6, 7, 501, 5000])
def test_max_points_is_a_hard_cap(api: Api, long_job: LongJob, max_points: int) -> None:
    """Whatever the cap, no more points come back, the first and last always do, and the spike
    does as soon as there is room for one bucket."""
    steps = [p["step"] for p in series(api, long_job, max_points=str(max_points))]

    assert len(steps) <= max_points
    assert steps[0] == 1
    assert steps[-1] == LONG_SERIES
    if max_points >= 4:
        assert SPIKE_STEP in steps


def test_since_step_on_a_long_series_is_capped_too(api: Api, long_job: LongJob) -> None:
    """Polling for the points after step 98,000 (2,000 newer ones) gets at most max_points of
    them, from the first newer point to the last."""
    steps = [p["step"] for p in series(api, long_job, since_step="98000", max_points="500")]

    assert len(steps) <= 500
    assert steps[0] == 98_001
    assert steps[-1] == LONG_SERIES
    assert all(step > 98_000 for step in steps)


# --- against the SQL function directly, on random series ----------------------------------------


@pytest.fixture
def db(test_db: ClonedDatabase) -> Iterator[DirectDatabase]:
    database = DirectDatabase(test_db.app, min_size=1, max_size=1)
    yield database
    database.close()


def insert_batch(
    conn: psycopg.Connection, job_id: uuid.UUID, points: list[tuple[int, float | None]]
) -> None:
    """One statement per batch, as the processor writes a poll's history."""
    conn.execute(
        "insert into metrics_points (job_id, step, training_loss)"
        " select %s, unnest(%s::integer[]), unnest(%s::double precision[])",
        (job_id, [step for step, _ in points], [loss for _, loss in points]),
    )


def _random_series(rng: random.Random) -> list[tuple[int, float | None]]:
    """Steps with gaps, losses with noise, holes (NULL), non-finite values and outliers."""
    n = rng.choice([5, 300, 2_000, 30_000])
    step, points = rng.randrange(0, 50), []
    for i in range(n):
        step += rng.choice([1, 1, 1, 2, 10]) if rng.random() < 0.9 else rng.randrange(1, 5000)
        roll = rng.random()
        loss: float | None
        if roll < 0.03:
            loss = None
        elif roll < 0.04:
            loss = rng.choice([math.nan, math.inf, -math.inf])
        elif roll < 0.045:
            loss = rng.uniform(-50, 50)
        else:
            loss = 3 * math.exp(-i / (n / 3)) + rng.gauss(0, 0.05)
        points.append((step, loss))
    return points


@pytest.mark.parametrize("seed", range(6))
def test_downsampling_properties_on_random_series(
    admin_conn: psycopg.Connection, db: DirectDatabase, seed: int
) -> None:
    """On series with gaps, NULL and non-finite losses, inserted in batches: at most max_points
    real points in step order, all of them when they fit, else the first, the last and the
    lowest and highest finite loss after since_step, with non-finite values shown as null."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not a secret
    user_id = make_user(admin_conn)
    job_id = make_job(admin_conn, user_id, status=JobStatus.RUNNING)
    points = _random_series(rng)
    for start in range(0, len(points), 700):
        insert_batch(admin_conn, job_id, points[start : start + 700])
    user = UserContext(claims_for(user_id), token="unused-by-direct")

    for _ in range(8):
        max_points = rng.choice([2, 3, 10, 100, 500, 5000])
        since = rng.choice(
            [None, 0, points[0][0], points[len(points) // 2][0], rng.randrange(0, 10**5)]
        )
        detail = db.call(
            "get_job_detail",
            {"p_job_id": job_id, "p_max_points": max_points, "p_since_step": since},
            as_user=user,
        )
        expected = [(s, loss) for s, loss in points if since is None or s > since]
        stored = dict(expected)
        got = detail["metrics"]
        steps = [p["step"] for p in got]
        context = f"max_points={max_points} since={since} n={len(expected)}"

        assert steps == sorted(set(steps)), context
        assert len(steps) <= max_points, context
        assert set(steps) <= set(stored), context
        for p in got:
            loss = stored[p["step"]]
            if loss is None or not math.isfinite(loss):
                assert p["training_loss"] is None
            else:
                assert p["training_loss"] == pytest.approx(loss)
        if len(expected) <= max_points:
            assert steps == [s for s, _ in expected], context
            continue
        assert steps[0] == expected[0][0], context
        assert steps[-1] == expected[-1][0], context
        finite = [(loss, s) for s, loss in expected if loss is not None and math.isfinite(loss)]
        if finite and max_points >= 4:
            assert min(finite)[1] in steps, context
            assert max(finite, key=lambda pair: (pair[0], -pair[1]))[1] in steps, context


def _rollups(conn: psycopg.Connection, job_id: uuid.UUID) -> list[tuple[object, ...]]:
    return conn.execute(
        "select width, bucket, first_step, lowest, highest from lora_private.metrics_rollups"
        " where job_id = %s order by width, bucket",
        (job_id,),
    ).fetchall()


def _rollups_from_scratch(conn: psycopg.Connection, job_id: uuid.UUID) -> list[tuple[object, ...]]:
    return conn.execute(
        "select w.width, p.step / w.width, min(p.step),"
        " min(array[p.loss, p.step]) filter (where p.loss is not null),"
        " max(array[p.loss, -p.step]) filter (where p.loss is not null)"
        " from (select step, lora_private.finite_or_null(training_loss) as loss"
        " from metrics_points"
        "       where job_id = %s) p"
        " cross join unnest(lora_private.metrics_rollup_widths()) as w(width)"
        " group by w.width, p.step / w.width order by 1, 2",
        (job_id,),
    ).fetchall()


def test_rollups_stay_exact_through_inserts_updates_and_deletes(
    admin_conn: psycopg.Connection,
) -> None:
    """The rollups equal a recomputation from the points after batched inserts, after updates
    that take away a bucket's extreme or move a point, and after deletes that empty buckets."""
    rng = random.Random(7)  # noqa: S311 - reproducible test data, not a secret
    user_id = make_user(admin_conn)
    job_id = make_job(admin_conn, user_id, status=JobStatus.RUNNING)
    for start in range(1, 3000, 250):
        insert_batch(
            admin_conn, job_id, [(s, rng.uniform(0, 3)) for s in range(start, start + 250)]
        )
    assert _rollups(admin_conn, job_id) == _rollups_from_scratch(admin_conn, job_id)

    admin_conn.execute(
        "update metrics_points set training_loss = 1.5 where job_id = %s and step in"
        " (select step from metrics_points where job_id = %s order by training_loss limit 5)",
        (job_id, job_id),
    )
    admin_conn.execute(
        "update metrics_points set step = 70000 where job_id = %s and step = 17", (job_id,)
    )
    assert _rollups(admin_conn, job_id) == _rollups_from_scratch(admin_conn, job_id)

    admin_conn.execute(
        "delete from metrics_points where job_id = %s and step between 100 and 1300", (job_id,)
    )
    assert _rollups(admin_conn, job_id) == _rollups_from_scratch(admin_conn, job_id)


def test_rollups_go_with_their_job(admin_conn: psycopg.Connection) -> None:
    """Deleting a job deletes its points and its rollups."""
    user_id = make_user(admin_conn)
    job_id = make_job(admin_conn, user_id, status=JobStatus.RUNNING)
    admin_conn.execute(
        "insert into metrics_points (job_id, step, training_loss)"
        " select %s, s, 1.0 / s from generate_series(1, 100) s",
        (job_id,),
    )
    assert _rollups(admin_conn, job_id)

    admin_conn.execute("delete from training_jobs where id = %s", (job_id,))

    assert _rollups(admin_conn, job_id) == []


def test_rollups_are_readable_by_their_owner_only(
    admin_conn: psycopg.Connection, test_db: ClonedDatabase
) -> None:
    """RLS on the rollups: the job's owner reads them, another user and anon read none."""
    owner, stranger = make_user(admin_conn), make_user(admin_conn)
    job_id = make_job(admin_conn, owner, status=JobStatus.RUNNING)
    admin_conn.execute(
        "insert into metrics_points (job_id, step, training_loss)"
        " select %s, s, 1.0 / s from generate_series(1, 100) s",
        (job_id,),
    )
    with psycopg.connect(test_db.app, autocommit=True) as conn:

        def visible_to(user_id: uuid.UUID) -> int:
            with conn.transaction():
                conn.execute(
                    "select set_config('role', 'authenticated', true),"
                    " set_config('request.jwt.claims', %s, true)",
                    (f'{{"sub": "{user_id}", "role": "authenticated"}}',),
                )
                row = conn.execute("select count(*) from lora_private.metrics_rollups").fetchone()
            assert row is not None
            return int(row[0])

        assert visible_to(owner) > 0
        assert visible_to(stranger) == 0
        conn.execute("set role anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select count(*) from lora_private.metrics_rollups")
