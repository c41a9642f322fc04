"""Creating a job the way a Supabase frontend does (migration 20261202000300_job_creation.sql).

supabase-js's ``insert`` reaches PostgREST, which logs in as ``authenticator``, switches to
``authenticated`` with the caller's claims for the transaction and inserts the JSON body through
``json_populate_recordset``; these tests send the same statement over the same login. The
pgTAP file ``11-job-creation.sql`` covers each refusal per actor; here: the PostgREST path, the
estimate against the formula computed in Python for every seeded GPU type, the backend's inserts
(``tests.factories.make_job``), and the hyperparameter schema against the trainer's own.
"""

from __future__ import annotations

import json
import math
import typing
import uuid
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.conftest import ClonedDatabase
from tests.factories import claims_for, make_job, make_user

# PostgREST's insert, as it builds it for `POST /rest/v1/training_jobs?select=...` with the body
# as $1 (`columns` are the body's keys; `select` becomes RETURNING).
_POSTGREST_INSERT = sql.SQL("""
with pgrst_payload as (select %(body)s::json as json_data),
pgrst_body as (
  select case when json_typeof(json_data) = 'array' then json_data
              else json_build_array(json_data) end as val
  from pgrst_payload)
insert into public.training_jobs ({columns})
select {columns}
from json_populate_recordset(null::public.training_jobs, (select val from pgrst_body)) _
returning {returning}
""")


def _dataset(
    conn: psycopg.Connection, user_id: uuid.UUID, pairs: int | None, *, ready: bool = True
) -> uuid.UUID:
    row = conn.execute(
        "insert into public.datasets (user_id, name, storage_path, training_ready,"
        " total_training_pairs) values (%s, 'support', 'data/train.jsonl', %s, %s) returning id",
        (user_id, ready, pairs),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


@pytest.fixture
def user_conn(test_db: ClonedDatabase) -> Iterator[psycopg.Connection]:
    """PostgREST's own login (not a superuser), one transaction per `with conn.transaction()`."""
    with psycopg.connect(test_db.app) as conn:
        yield conn


def _insert_as(
    conn: psycopg.Connection,
    user_id: uuid.UUID | None,
    body: dict[str, Any],
    returning: list[str] | None = None,
) -> dict[str, Any]:
    """One Data API insert as `user_id` (anon when None), in its own transaction, answering the
    `returning` columns (every column when `["*"]`)."""
    columns = sql.SQL(", ").join(sql.Identifier(name) for name in body)
    returned = returning or ["id", "status", "estimated_total_cost"]
    returning_sql = (
        sql.SQL("*")
        if returned == ["*"]
        else sql.SQL(", ").join(sql.Identifier(name) for name in returned)
    )
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        role = "anon" if user_id is None else "authenticated"
        claims = {"role": "anon"} if user_id is None else claims_for(user_id)
        cur.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            (role, json.dumps(claims)),
        )
        cur.execute(
            _POSTGREST_INSERT.format(columns=columns, returning=returning_sql),
            {"body": json.dumps(body)},
        )
        row = cur.fetchone()
    assert row is not None
    return row


def test_owner_creates_a_job_through_the_data_api(
    admin_conn: psycopg.Connection, user_conn: psycopg.Connection
) -> None:
    """The insert supabase-js sends creates a queued job of the caller's, with the estimate, and
    answers the columns the client selected."""
    owner = make_user(admin_conn)
    dataset_id = _dataset(admin_conn, owner, 1000)
    row = _insert_as(
        user_conn,
        owner,
        {
            "dataset_id": str(dataset_id),
            "hyperparameters": {"epochs": 2, "batch_size": 16, "learning_rate": 0.0001},
            "gpu_config": {"gpu_type": "H100", "gpu_count": 2},
        },
        returning=["id", "user_id", "status", "estimated_total_cost", "current_cost"],
    )
    assert row["user_id"] == owner
    assert row["status"] == "queued"
    assert row["current_cost"] == 0
    assert row["estimated_total_cost"] == _expected_estimate(
        admin_conn, "H100", 2, pairs=1000, epochs=2, batch_size=16
    )
    stored = admin_conn.execute(
        "select attempts, idempotency_key, lease_owner from public.training_jobs where id = %s",
        (row["id"],),
    ).fetchone()
    assert stored == (0, None, None)


def test_returning_every_column_is_refused(
    admin_conn: psycopg.Connection, user_conn: psycopg.Connection
) -> None:
    """`.insert(...).select()` with no column list asks for the bookkeeping too, which users may
    not read: the client lists the columns it wants (README)."""
    owner = make_user(admin_conn)
    dataset_id = _dataset(admin_conn, owner, 10)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _insert_as(user_conn, owner, {"dataset_id": str(dataset_id)}, returning=["*"])


def test_a_refusal_reaches_the_client_with_its_sqlstate_and_message(
    admin_conn: psycopg.Connection, user_conn: psycopg.Connection
) -> None:
    """PostgREST answers the database's SQLSTATE and message: the client can show it."""
    owner = make_user(admin_conn)
    dataset_id = _dataset(admin_conn, owner, 10)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        _insert_as(
            user_conn,
            owner,
            {"dataset_id": str(dataset_id), "hyperparameters": {"learning_rate": 5}},
        )
    assert caught.value.diag.message_primary == (
        "hyperparameters.learning_rate must be a number greater than 0 and at most 0.01, not 5"
    )
    assert admin_conn.execute("select count(*) from public.training_jobs").fetchone() == (0,)


def test_anon_cannot_create_a_job(
    admin_conn: psycopg.Connection, user_conn: psycopg.Connection
) -> None:
    owner = make_user(admin_conn)
    dataset_id = _dataset(admin_conn, owner, 10)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _insert_as(user_conn, None, {"dataset_id": str(dataset_id), "user_id": str(owner)})


# --- the estimate --------------------------------------------------------------------------------


def _expected_estimate(
    conn: psycopg.Connection,
    gpu_type: str,
    gpu_count: int,
    *,
    pairs: int,
    epochs: int = 3,
    batch_size: int = 8,
) -> Decimal:
    """The documented formula, computed here rather than by the database."""
    row = conn.execute(
        "select hourly_rate, training_pairs_per_second, startup_seconds"
        " from public.gpu_prices where gpu_type = %s",
        (gpu_type,),
    ).fetchone()
    assert row is not None
    rate, speed, startup = (Decimal(value) for value in row)
    steps = epochs * math.ceil(Decimal(pairs) / (batch_size * gpu_count))
    seconds = startup + Decimal(steps * batch_size) / speed
    return (rate * gpu_count * seconds / 3600).quantize(Decimal("0.0001"), ROUND_HALF_UP)


SEEDED_GPU_TYPES = ["H100", "A100-80GB", "A100", "L40S", "A10G", "L4", "T4"]


@pytest.mark.parametrize("gpu_type", SEEDED_GPU_TYPES)
@pytest.mark.parametrize(
    ("pairs", "hyperparameters", "gpu_count"),
    [
        (200, {}, 1),
        (1001, {"epochs": 5, "batch_size": 4}, 3),
        (50_000, {"epochs": 1, "batch_size": 64}, 8),
    ],
)
def test_estimate_follows_the_formula(
    admin_conn: psycopg.Connection,
    user_conn: psycopg.Connection,
    gpu_type: str,
    pairs: int,
    hyperparameters: dict[str, int],
    gpu_count: int,
) -> None:
    """hourly_rate x G x (startup + E x ceil(N / (B x G)) x B / speed) / 3600, rounded to 4
    places, with epochs 3 and batch size 8 when absent."""
    owner = make_user(admin_conn)
    dataset_id = _dataset(admin_conn, owner, pairs)
    row = _insert_as(
        user_conn,
        owner,
        {
            "dataset_id": str(dataset_id),
            "hyperparameters": hyperparameters,
            "gpu_config": {"gpu_type": gpu_type, "gpu_count": gpu_count},
        },
    )
    assert row["estimated_total_cost"] == _expected_estimate(
        admin_conn, gpu_type, gpu_count, pairs=pairs, **hyperparameters
    )


def test_seeded_speeds_order_the_gpus_as_their_prices_do(admin_conn: psycopg.Connection) -> None:
    """Every seeded type has its own speed (not the slow default), faster GPUs cost more an hour."""
    rows = admin_conn.execute(
        "select gpu_type, training_pairs_per_second from public.gpu_prices"
        " where gpu_type = any(%s) order by hourly_rate",
        (SEEDED_GPU_TYPES,),
    ).fetchall()
    assert len(rows) == len(SEEDED_GPU_TYPES)
    speeds = [speed for _, speed in rows]
    assert all(speed > 1 or gpu == "T4" for gpu, speed in rows)
    assert speeds == sorted(speeds)


# --- the backend ---------------------------------------------------------------------------------


def test_factories_still_create_any_job(admin_conn: psycopg.Connection) -> None:
    """The processor's tests insert jobs as the superuser: nothing is checked (their datasets have
    no pair count), nothing is made up."""
    owner = make_user(admin_conn)
    job_id = make_job(
        admin_conn,
        owner,
        gpu_config={"gpu_type": "A100", "gpu_count": 16},
        hyperparameters={"epochs": 3, "lora_rank": 8},
    )
    row = admin_conn.execute(
        "select status, hyperparameters, estimated_total_cost from public.training_jobs"
        " where id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("queued", {"epochs": 3, "lora_rank": 8}, None)


def test_service_role_inserts_are_taken_as_given_with_an_estimate(
    admin_conn: psycopg.Connection, service_conn: psycopg.Connection
) -> None:
    owner = make_user(admin_conn)
    dataset_id = _dataset(admin_conn, owner, 400, ready=False)
    row = service_conn.execute(
        "insert into public.training_jobs (user_id, dataset_id, hyperparameters, gpu_config)"
        " values (%s, %s, %s, %s) returning estimated_total_cost",
        (
            owner,
            dataset_id,
            Jsonb({"epochs": 2, "warmup_ratio": 0.1}),
            Jsonb({"gpu_type": "L4", "gpu_count": 1}),
        ),
    ).fetchone()
    assert row == (_expected_estimate(admin_conn, "L4", 1, pairs=400, epochs=2),)


# --- the trainer's hyperparameters ----------------------------------------------------------------


def _rules(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("select * from public.training_job_hyperparameter_rules()").fetchall()


def _trainer_bounds(field: Any) -> tuple[Any, bool, Any, bool]:
    """(lower, lower is exclusive, upper, upper is exclusive) of a pydantic field; None where
    unbounded."""
    lower, lower_exclusive, upper, upper_exclusive = None, False, None, False
    for item in field.metadata:
        if getattr(item, "ge", None) is not None:
            lower = item.ge
        if getattr(item, "gt", None) is not None:
            lower, lower_exclusive = item.gt, True
        if getattr(item, "le", None) is not None:
            upper = item.le
        if getattr(item, "lt", None) is not None:
            upper, upper_exclusive = item.lt, True
    return lower, lower_exclusive, upper, upper_exclusive


def test_hyperparameters_agree_with_the_trainer(admin_conn: psycopg.Connection) -> None:
    """Every setting a user may give is one the trainer reads, under the same name, with the
    default the database documents, and every value the database accepts the trainer accepts.
    (`max_cost` is the processor's budget, not a training setting.)"""
    config = pytest.importorskip("trainer.config")
    fields = config.Hyperparameters.model_fields
    for rule in _rules(admin_conn):
        name = rule["name"]
        if name == "max_cost":
            continue
        assert name in fields, f"the trainer does not read {name}"
        field = fields[name]
        assert field.default == rule["default_value"], (
            f"{name}: the trainer's default is {field.default!r}, the database documents "
            f"{rule['default_value']!r}"
        )
        if rule["kind"] in {"integer", "number"}:
            lower, lower_exclusive, upper, upper_exclusive = _trainer_bounds(field)
            minimum, maximum = rule["minimum"], rule["maximum"]
            if lower is not None:
                assert minimum > lower or (
                    minimum == lower and (rule["exclusive_minimum"] or not lower_exclusive)
                ), f"{name}: the database accepts {minimum}, beyond the trainer's lower bound"
            if upper is not None:
                assert maximum is not None, f"{name}: the trainer has an upper bound"
                assert maximum < upper or (maximum == upper and not upper_exclusive), (
                    f"{name}: the database accepts {maximum}, beyond the trainer's upper bound"
                )
        if rule["kind"] == "choice":
            allowed = set(typing.get_args(field.annotation))
            assert set(rule["choices"]) <= allowed, name
