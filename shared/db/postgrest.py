"""PostgREST transport: Supabase's REST API, via postgrest-py's `rpc()` (what supabase-py uses).

User calls carry the user's own JWT as `Authorization` and the anon (publishable) key as `apikey`,
so PostgREST verifies the token and switches to `authenticated` itself; service calls carry the
service-role (secret) key in both headers, as Supabase's SDKs send it. A client is made per call
with its own headers over one shared HTTP connection pool: a shared client mutated with
`.auth()` would leak one user's token into another's request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from postgrest import APIError, SyncPostgrestClient
from pydantic_core import to_jsonable_python

from shared.db.common import UserContext, check_identifier
from shared.db.sqlstate import database_error, unreachable_error


class PostgrestDatabase:
    def __init__(
        self,
        supabase_url: str,
        *,
        service_key: str,
        anon_key: str,
        timeout_seconds: float = 10.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._rest_url = supabase_url.rstrip("/") + "/rest/v1"
        self._service_key = service_key
        self._anon_key = anon_key
        self._http = http_client or httpx.Client(timeout=timeout_seconds)

    def _client(self, as_user: UserContext | None) -> SyncPostgrestClient:
        if as_user is None:
            apikey, bearer = self._service_key, self._service_key
        else:
            apikey, bearer = self._anon_key, as_user.token
        return SyncPostgrestClient(
            self._rest_url,
            headers={
                "Accept": "application/json",
                "Content-Type": "application/json",
                "apikey": apikey,
                "Authorization": f"Bearer {bearer}",
            },
            http_client=self._http,
            # Calls may change data: a blind retry could apply one twice.
            retry_enabled=False,
        )

    def call(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        as_user: UserContext | None = None,
    ) -> Any:
        params = {
            check_identifier("argument", k): to_jsonable_python(v) for k, v in (args or {}).items()
        }
        client = self._client(as_user)
        try:
            response = client.rpc(check_identifier("function", name), params).execute()
        except APIError as exc:
            raise database_error(
                name, exc.code, exc.message, detail=exc.details, hint=exc.hint
            ) from exc
        except httpx.HTTPError as exc:
            raise unreachable_error(name, exc) from exc
        return response.data

    def close(self) -> None:
        self._http.close()
