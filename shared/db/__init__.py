"""The database gateway (DESIGN section 4): every operation is a SQL function, called the same way
over either transport, under the same roles, so RLS tested locally is RLS in production."""

from shared.db.direct import DirectDatabase
from shared.db.gateway import Database, UserContext, database_from_settings, error_for_sqlstate
from shared.db.postgrest import PostgrestDatabase

__all__ = [
    "Database",
    "DirectDatabase",
    "PostgrestDatabase",
    "UserContext",
    "database_from_settings",
    "error_for_sqlstate",
]
