"""A throwaway PostgreSQL for tests and `make dev`, and the schema applied the way Supabase does.

PostgreSQL refuses to run as root, so when we are root the server runs as the `postgres` user,
in a data directory under the system temp dir (a clone under a root-only folder would be
unreadable to it). Nothing here is used in production.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "infra" / "local" / "supabase_bootstrap.sql"
MIGRATIONS = REPO / "supabase" / "migrations"
SEED = REPO / "supabase" / "seed.sql"

SUPERUSER = "postgres"
# The login role the functions use locally: not a superuser, may only switch to the API roles.
APP_USER = "authenticator"


def _pg_bin(name: str) -> str:
    """Find a PostgreSQL server program: on PATH, or in Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    if not candidates:
        raise RuntimeError(
            f"PostgreSQL's {name} was not found: install PostgreSQL (make deps does it on Debian)"
        )
    return str(candidates[0])


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SUPERUSER, "--", *cmd]
    return cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`, trusting local users."""

    data_dir: Path
    port: int
    # Extra server settings, e.g. {"shared_preload_libraries": "pg_stat_statements"}.
    settings: dict[str, str] = field(default_factory=dict)

    def conninfo(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    def url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def _prepare_dir(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir.parent, user=SUPERUSER)

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._prepare_dir()
        subprocess.run(
            _as_server_user(
                [
                    _pg_bin("initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    SUPERUSER,
                    "--auth",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--no-instructions",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self.init()
        if port_in_use(self.port):
            raise RuntimeError(
                f"port {self.port} is already in use: stop what listens there or choose another "
                "port (PG_PORT)"
            )
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.data_dir}",
                # Throwaway data: durability buys nothing and costs test time.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=300",
                *(f"-c {name}={value}" for name, value in self.settings.items()),
            ]
        )
        result = subprocess.run(
            _as_server_user(
                [
                    _pg_bin("pg_ctl"),
                    "--pgdata",
                    str(self.data_dir),
                    "--log",
                    str(self.data_dir / "server.log"),
                    "--options",
                    options,
                    "--wait",
                    "start",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            log = self.data_dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start:\n{result.stderr}\n{tail}")
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.conninfo(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        subprocess.run(
            _as_server_user(
                [
                    _pg_bin("pg_ctl"),
                    "--pgdata",
                    str(self.data_dir),
                    "--mode",
                    "fast",
                    "--wait",
                    "stop",
                ]
            ),
            check=False,
            capture_output=True,
        )

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def throwaway_cluster(settings: dict[str, str] | None = None) -> LocalPostgres:
    """A new, empty cluster on a free port in a fresh temporary folder (removed by destroy())."""
    root = Path(tempfile.mkdtemp(prefix="lora-runner-pg-"))
    # The server runs as `postgres` when we are root: it must be able to reach its data folder.
    os.chmod(root, 0o755)  # noqa: S103
    return LocalPostgres(data_dir=root / "data", port=free_port(), settings=settings or {})


def migration_files() -> list[Path]:
    """The migrations in the order Supabase applies them: by their timestamp prefix."""
    return sorted(MIGRATIONS.glob("*.sql"))


def apply_schema(conninfo: str, *, seed: bool = False) -> None:
    """Bootstrap + every migration (+ the seed), each file in its own transaction."""
    files = [BOOTSTRAP, *migration_files()]
    if seed:
        files.append(SEED)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for path in files:
            try:
                with conn.transaction():
                    conn.execute(path.read_text())
            except psycopg.Error as exc:
                raise RuntimeError(f"{path.relative_to(REPO)} failed: {exc}") from exc


def create_database(admin_conninfo: str, name: str, *, template: str | None = None) -> None:
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        stmt = sql.SQL("create database {}").format(sql.Identifier(name))
        if template:
            stmt = sql.SQL("{} template {}").format(stmt, sql.Identifier(template))
        conn.execute(stmt)


def drop_database(admin_conninfo: str, name: str) -> None:
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
