"""The database gateway, as DATABASE_URL or the Supabase settings describe it."""

from __future__ import annotations

import functools

from shared.config import DatabaseSettings, load
from shared.db import Database, database_from_settings


@functools.cache
def database() -> Database:
    return database_from_settings(load(DatabaseSettings))
