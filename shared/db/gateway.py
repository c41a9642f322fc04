"""The transport-independent part of the gateway: the interface, the caller, and error mapping."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.config import DatabaseSettings
from shared.errors import (
    DatabaseError,
    DatabaseUnavailable,
    InvalidTransition,
    NotFound,
    PermissionDenied,
)

# Function and argument names end up in SQL (direct) or in a URL path (PostgREST): only plain
# identifiers, never anything a caller could smuggle syntax through.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class UserContext:
    """A signed-in caller: the verified JWT claims (for the direct transport, which sets them as
    `request.jwt.claims` like PostgREST does) and the raw token (for PostgREST, which verifies
    it again on its side)."""

    claims: Mapping[str, Any]
    token: str = field(repr=False)

    @property
    def user_id(self) -> str:
        return str(self.claims["sub"])


class Database(Protocol):
    """Calls SQL functions in the `public` schema.

    `as_user=None` calls as the service role (the processor); a :class:`UserContext` calls as
    `authenticated` with that user's claims, so RLS applies. Arguments are passed by name, as
    PostgREST does; dicts and lists go to jsonb parameters (so both transports type them alike).
    Functions called this way return jsonb or a scalar, and the result comes back as the decoded
    JSON value on both transports.
    """

    def call(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        as_user: UserContext | None = None,
    ) -> Any: ...

    def close(self) -> None: ...


def check_identifier(kind: str, name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid SQL {kind} name: {name!r}")
    return name


# Our own SQLSTATEs (raised by the migrations) carry messages written for users; PostgREST uses
# the PTxxx class to choose the HTTP status, so the same code means the same thing on both paths.
_OWN_CODES: dict[str, type[DatabaseError]] = {
    "PT404": NotFound,
    "PT409": InvalidTransition,
    "PT403": PermissionDenied,
}


def error_for_sqlstate(code: str | None, message: str | None) -> DatabaseError:
    """The library error for a database error code; only our own codes pass their text on."""
    code = code or ""
    if code in _OWN_CODES:
        return _OWN_CODES[code](message)
    if code == "42501" or code.startswith("PGRST30"):
        # Privilege or RLS refusal, or PostgREST refusing the token: the details stay in logs.
        return PermissionDenied()
    if code.startswith("08") or code in {"57P01", "57P03", "53300"}:
        return DatabaseUnavailable()
    if code == "57014":
        return DatabaseUnavailable("The database took too long to answer.")
    return DatabaseError()


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
