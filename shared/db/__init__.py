"""The database gateway (docs/architecture.md, section 3): every operation is a SQL function,
called the same way over either transport, under the same roles, so RLS tested locally is RLS
in production."""

from shared.db.common import UserContext
from shared.db.direct import DirectDatabase
from shared.db.gateway import Database, database_from_settings
from shared.db.postgrest import PostgrestDatabase
from shared.db.sqlstate import error_for_sqlstate

__all__ = [
    "Database",
    "DirectDatabase",
    "PostgrestDatabase",
    "UserContext",
    "database_from_settings",
    "error_for_sqlstate",
]
