"""The transport-independent part of the gateway: the interface, and choosing a transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from shared.config import DatabaseSettings
from shared.db.common import UserContext, check_identifier
from shared.db.sqlstate import error_for_sqlstate

__all__ = [
    "Database",
    "UserContext",
    "check_identifier",
    "database_from_settings",
    "error_for_sqlstate",
]


class Database(Protocol):
    """Calls SQL functions in the `public` schema.

    `as_user=None` calls as the service role (the processor); a :class:`UserContext` calls as
    `authenticated` with that user's claims, so RLS applies. Arguments are passed by name, as
    PostgREST does; dicts and lists go to jsonb parameters (so both transports type them alike).
    Functions called this way return jsonb or a scalar, and the result comes back as the decoded
    JSON value on both transports.

    A failed call raises a :class:`~shared.errors.DatabaseError` whose `sqlstate` and
    `function` say what failed; what the database said about it is logged, never raised.
    """

    def call(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        as_user: UserContext | None = None,
    ) -> Any: ...

    def close(self) -> None: ...


def database_from_settings(settings: DatabaseSettings) -> Database:
    """The transport the settings ask for: direct when DATABASE_URL is set, else PostgREST."""
    if settings.transport == "direct":
        from shared.db.direct import DirectDatabase

        assert settings.database_url is not None  # noqa: S101 - guaranteed by transport
        return DirectDatabase(
            settings.database_url.get_secret_value(),
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            statement_timeout_seconds=settings.db_timeout_seconds,
        )
    from shared.db.postgrest import PostgrestDatabase

    assert settings.supabase_url is not None  # noqa: S101
    assert settings.supabase_service_role_key is not None  # noqa: S101
    assert settings.supabase_anon_key is not None  # noqa: S101
    return PostgrestDatabase(
        settings.supabase_url,
        service_key=settings.supabase_service_role_key.get_secret_value(),
        anon_key=settings.supabase_anon_key.get_secret_value(),
        timeout_seconds=settings.db_timeout_seconds,
    )
