"""The migrations and the Python models describe the same schema."""

from __future__ import annotations

import tomllib

import psycopg
import pytest
from pydantic import BaseModel

from infra.local import postgres
from tests.rows import (
    CostRecord,
    Dataset,
    GpuPrice,
    MetricsPoint,
    Notification,
    TrainingJob,
    UserJobLimit,
)

MODELS: dict[str, type[BaseModel]] = {
    "gpu_prices": GpuPrice,
    "datasets": Dataset,
    "training_jobs": TrainingJob,
    "metrics_points": MetricsPoint,
    "cost_records": CostRecord,
    "notifications": Notification,
    "user_job_limits": UserJobLimit,
}


@pytest.mark.parametrize("table", sorted(MODELS))
def test_row_model_has_exactly_the_tables_columns(
    admin_conn: psycopg.Connection, table: str
) -> None:
    """Each row model names every column of its table, and no column the table lacks."""
    columns = {
        row[0]
        for row in admin_conn.execute(
            "select column_name from information_schema.columns"
            " where table_schema = 'public' and table_name = %s",
            (table,),
        )
    }
    assert columns == set(MODELS[table].model_fields)


def test_job_status_enum_matches(admin_conn: psycopg.Connection) -> None:
    """The database's job_status enum has the statuses JobStatus has, in lifecycle order."""
    row = admin_conn.execute("select enum_range(null::job_status)::text[]").fetchone()
    assert row is not None
    assert row[0] == ["queued", "initializing", "running", "completed", "failed", "cancelled"]


def test_every_public_table_is_modelled(admin_conn: psycopg.Connection) -> None:
    """A new table in a migration needs a row model (and RLS, checked by the pgTAP suite)."""
    tables = {
        row[0]
        for row in admin_conn.execute("select tablename from pg_tables where schemaname = 'public'")
    }
    assert tables == set(MODELS)


def test_bootstrap_and_migrations_apply_twice_to_the_same_server(
    admin_conn: psycopg.Connection,
) -> None:
    """The bootstrap is idempotent (roles are server-wide), so a second database on the same
    server gets the full schema too."""
    dsn = admin_conn.info.dsn
    name = "schema_twice"
    postgres.create_database(dsn, name)
    try:
        postgres.apply_schema(psycopg.conninfo.make_conninfo(dsn, dbname=name), seed=True)
        with psycopg.connect(psycopg.conninfo.make_conninfo(dsn, dbname=name)) as conn:
            row = conn.execute("select count(*) from training_jobs").fetchone()
        assert row == (2,)
    finally:
        postgres.drop_database(dsn, name)


def test_private_schema_is_not_served_by_the_data_api() -> None:
    """Supabase's Data API serves only `public`: the rollups in `lora_private` stay reachable
    through get_job_detail alone (pgTAP cannot read the API settings, so this reads them)."""
    config = tomllib.loads((postgres.REPO / "supabase" / "config.toml").read_text())
    assert config["api"]["schemas"] == ["public"]
    assert "lora_private" not in config["api"]["extra_search_path"]
