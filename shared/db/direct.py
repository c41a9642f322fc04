"""Direct transport: psycopg 3 with a pool, doing per transaction exactly what PostgREST does.

Each call is one transaction: switch to `authenticated` with the caller's claims (or to
`service_role`), call the function, commit. The role switch is transaction-local, so a pooled
connection never carries one caller's identity into the next call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from shared.db.common import UserContext, check_identifier
from shared.db.sqlstate import database_error, unreachable_error
from shared.errors import DatabaseError


def _adapt(value: Any) -> Any:
    if isinstance(value, Mapping | list | tuple):
        return Jsonb(value)
    return value


class DirectDatabase:
    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        statement_timeout_seconds: float = 10.0,
        schema: str = "public",
    ) -> None:
        self._schema = check_identifier("schema", schema)
        self._timeout_ms = str(int(statement_timeout_seconds * 1000))
        self._pool = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            # Supabase's transaction pooler cannot keep prepared statements between transactions.
            kwargs={"prepare_threshold": None},
            timeout=statement_timeout_seconds,
            open=False,
        )
        self._pool.open(wait=False)

    def call(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        as_user: UserContext | None = None,
    ) -> Any:
        args = args or {}
        query = sql.SQL("select to_jsonb({}.{}({}))").format(
            sql.Identifier(self._schema),
            sql.Identifier(check_identifier("function", name)),
            sql.SQL(", ").join(
                sql.SQL("{} => {}").format(
                    sql.Identifier(check_identifier("argument", key)), sql.Placeholder(key)
                )
                for key in args
            ),
        )
        role = "authenticated" if as_user is not None else "service_role"
        claims = json.dumps(dict(as_user.claims)) if as_user is not None else ""
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute(
                    "select set_config('role', %s, true),"
                    " set_config('request.jwt.claims', %s, true),"
                    " set_config('statement_timeout', %s, true)",
                    (role, claims, self._timeout_ms),
                )
                row = conn.execute(query, {k: _adapt(v) for k, v in args.items()}).fetchone()
        except PoolTimeout as exc:
            raise unreachable_error(name, exc) from exc
        except psycopg.OperationalError as exc:
            if exc.sqlstate is None:
                # The connection broke: no answer came, so nothing the server said to map.
                raise unreachable_error(name, exc) from exc
            raise self._error(name, exc) from exc
        except psycopg.Error as exc:
            raise self._error(name, exc) from exc
        return row[0] if row else None

    @staticmethod
    def _error(name: str, exc: psycopg.Error) -> DatabaseError:
        diag = exc.diag
        return database_error(
            name,
            exc.sqlstate,
            diag.message_primary or str(exc),
            detail=diag.message_detail,
            hint=diag.message_hint,
            context=diag.context,
        )

    def close(self) -> None:
        self._pool.close()
