"""get-job and cancel-job as Cloud Functions runs them: served by functions-framework over HTTP,
against the real PostgreSQL with the migrations, verifying tokens against a JWKS served over real
HTTP and against the legacy secret.

Both functions are started once per session against one database (`api_db`); every test makes its
own users, so RLS keeps the tests apart exactly as it keeps users apart. Tests that need the GPU
cluster serve cancel-job against the processor tests' Stack instead: their own database, the real
cluster simulator and the processor.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from infra.local import postgres
from infra.local.processes import start_function
from infra.local.s3 import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, LocalS3Server
from tests.api.tokens import JWT_SECRET, JwksServer, SigningKey, user_claims
from tests.cluster.support import API_KEY as CLUSTER_API_KEY
from tests.conftest import ClonedDatabase, PgServer, cloned_database
from tests.factories import make_user

# The processor tests' real stack (cluster simulator, S3 server, processor) for the cancel tests
# that need the cluster: imported so that pytest offers these fixtures here too.
from tests.processor.conftest import s3, stack  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
GET_JOB_SOURCE = REPO / "functions" / "get_job" / "main.py"
CANCEL_JOB_SOURCE = REPO / "functions" / "cancel_job" / "main.py"
ORIGIN = "https://monitor.example.com"


@pytest.fixture(scope="session")
def es256_key() -> SigningKey:
    return SigningKey.es256()


@pytest.fixture(scope="session")
def rs256_key() -> SigningKey:
    return SigningKey.rs256()


@pytest.fixture(scope="session")
def jwks(es256_key: SigningKey, rs256_key: SigningKey) -> Iterator[JwksServer]:
    server = JwksServer(es256_key, rs256_key)
    yield server
    server.close()


@pytest.fixture(scope="session")
def api_db(pg_server: PgServer, template_db: str) -> Iterator[ClonedDatabase]:
    with cloned_database(pg_server, template_db, prefix="lora_api") as database:
        yield database


@pytest.fixture(scope="session")
def api_admin(api_db: ClonedDatabase) -> Iterator[psycopg.Connection]:
    """A superuser connection to the session's API database, for arranging rows."""
    with psycopg.connect(api_db.admin, autocommit=True) as conn:
        yield conn


def function_env(
    database: ClonedDatabase, jwks: JwksServer, cluster_url: str, s3_url: str
) -> dict[str, str]:
    """What a deployment of get-job and cancel-job sets, pointed at the test's servers."""
    return {
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": s3_url,
        "S3_ACCESS_KEY_ID": LOCAL_ACCESS_KEY_ID,
        "S3_SECRET_ACCESS_KEY": LOCAL_SECRET_ACCESS_KEY,
        "DATABASE_URL": database.app,
        "SUPABASE_JWKS_URL": jwks.url,
        "SUPABASE_JWT_SECRET": JWT_SECRET,
        # Rotation is tested through the function: a new kid must be fetched at once here. The
        # cooldown itself is pinned by the verifier's own tests.
        "JWKS_REFRESH_COOLDOWN_SECONDS": "0",
        "ALLOWED_ORIGINS": ORIGIN,
        "GPU_CLUSTER_API_URL": cluster_url,
        "GPU_CLUSTER_API_KEY": CLUSTER_API_KEY,
        "GPU_CLUSTER_MAX_ATTEMPTS": "1",
        "CANCEL_CLUSTER_TIMEOUT_SECONDS": "3",
    }


def closed_port_url() -> str:
    """A local URL nothing listens on: connecting is refused at once."""
    return f"http://127.0.0.1:{postgres.free_port()}"


@dataclass
class Api:
    """The two functions, called as the monitor page calls them."""

    get_job_url: str
    cancel_job_url: str
    http: httpx.Client

    def get(
        self,
        job_id: uuid.UUID | str,
        token: str | None = None,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return self.http.get(
            f"{self.get_job_url}/{job_id}", params=params, headers=_headers(token, headers)
        )

    def cancel(self, job_id: uuid.UUID | str, token: str | None = None) -> httpx.Response:
        return self.http.post(f"{self.cancel_job_url}/{job_id}", headers=_headers(token, None))


def _headers(token: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return {**headers, **(extra or {})}


@pytest.fixture(scope="session")
def api(api_db: ClonedDatabase, jwks: JwksServer, s3_server: LocalS3Server) -> Iterator[Api]:
    env = function_env(api_db, jwks, closed_port_url(), s3_server.endpoint_url)
    with (
        start_function(GET_JOB_SOURCE, "get_job", env=env) as get_job,
        start_function(CANCEL_JOB_SOURCE, "cancel_job", env=env) as cancel_job,
        httpx.Client(timeout=30) as http,
    ):
        yield Api(get_job.base_url, cancel_job.base_url, http)


@dataclass(frozen=True)
class Caller:
    """A signed-in user of the app, with a valid ES256 access token."""

    user_id: uuid.UUID
    token: str


@pytest.fixture
def make_caller(api_admin: psycopg.Connection, es256_key: SigningKey) -> Callable[[], Caller]:
    def make() -> Caller:
        user_id = make_user(api_admin)
        return Caller(user_id, es256_key.sign(user_claims(user_id)))

    return make


@pytest.fixture
def owner(make_caller: Callable[[], Caller]) -> Caller:
    return make_caller()


@pytest.fixture
def stranger(make_caller: Callable[[], Caller]) -> Caller:
    return make_caller()
