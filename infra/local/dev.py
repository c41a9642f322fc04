"""`make dev`: the whole system on this machine, in the foreground until Ctrl-C.

:class:`DevStack` starts each piece, waits until it is healthy, and stops them all in reverse
order:

1. PostgreSQL with the Supabase bootstrap, the migrations and the seed (a demo user, a dataset in
   each bucket and a queued job on each), in a fresh database;
2. moto's S3 server with both buckets and the demo dataset in each;
3. the cluster simulator, slow enough to watch a run;
4. the monitor page (``web/``) as static files;
5. the three functions, served by functions-framework as Cloud Functions would, open to the
   page's origin (CORS);
6. a scheduler that calls process-training-jobs with the cron secret every few seconds.

Then it prints one URL that opens the monitor on a demo job; the URL's fragment carries the API
addresses and an access token minted for the demo user (the fragment never reaches a server).
Every port is a setting; the tests start the same stack on free ports with a fast simulator.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import urlencode

import httpx
import jwt
import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.local import postgres
from infra.local import s3 as local_s3
from infra.local.processes import ServerProcess, start_cluster_simulator, start_function
from shared.config import load
from shared.errors import ConfigurationError
from shared.storage import create_s3_client

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
FUNCTIONS = REPO / "functions"
UPLOT = WEB / "node_modules" / "uplot" / "dist" / "uPlot.esm.js"
DBNAME = "lora_dev"
# Loopback only: PostgreSQL trusts every local login, and nothing here is meant to be reachable
# from another machine.
HOST = "127.0.0.1"
# The seed's demo user (supabase/seed.sql): the printed URL signs in as this user.
DEMO_USER_ID = "00000000-0000-4000-8000-00000000d3e0"
DEMO_USER_EMAIL = "demo@example.com"
_HEALTH_POLL_SECONDS = 0.1


class DevSettings(BaseSettings):
    """What `make dev` can be told, from the environment; port 0 picks a free port."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True)

    pg_port: int = Field(default=54329, ge=0, le=65535, validation_alias="PG_PORT")
    s3_port: int = Field(default=54330, ge=0, le=65535, validation_alias="DEV_S3_PORT")
    cluster_port: int = Field(default=54331, ge=0, le=65535, validation_alias="DEV_CLUSTER_PORT")
    processor_port: int = Field(
        default=54332, ge=0, le=65535, validation_alias="DEV_PROCESSOR_PORT"
    )
    get_job_port: int = Field(default=54333, ge=0, le=65535, validation_alias="DEV_GET_JOB_PORT")
    cancel_job_port: int = Field(
        default=54334, ge=0, le=65535, validation_alias="DEV_CANCEL_JOB_PORT"
    )
    web_port: int = Field(default=54335, ge=0, le=65535, validation_alias="DEV_WEB_PORT")
    scheduler_interval_seconds: float = Field(
        default=3.0, gt=0, validation_alias="DEV_SCHEDULER_INTERVAL_SECONDS"
    )
    # 200 pairs, batch 8, 3 epochs: the first demo job's 75 steps take a minute and a quarter.
    steps_per_second: float = Field(default=1.0, gt=0, validation_alias="DEV_STEPS_PER_SECOND")
    init_seconds: float = Field(default=3.0, ge=0, validation_alias="DEV_INIT_SECONDS")
    token_ttl_hours: float = Field(default=12.0, gt=0, validation_alias="DEV_TOKEN_TTL_HOURS")
    root: Path = Field(
        default=Path(tempfile.gettempdir()) / "lora-runner-dev", validation_alias="DEV_ROOT"
    )

    def port_settings(self) -> dict[str, int]:
        """Each port by the name of the environment variable that sets it."""
        return {
            str(info.validation_alias): getattr(self, name)
            for name, info in type(self).model_fields.items()
            if name.endswith("_port")
        }


class PortInUse(RuntimeError):
    """A port `make dev` was told to use is taken by another program."""


def mint_access_token(secret: str, user_id: str, *, ttl: timedelta, email: str = "") -> str:
    """An access token shaped like one Supabase Auth issues (HS256, legacy JWT secret)."""
    now = datetime.now(UTC)
    claims = {
        "sub": user_id,
        "aud": "authenticated",
        "role": "authenticated",
        "email": email,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


class _StaticFiles(SimpleHTTPRequestHandler):
    """web/ as files; never cached, so an edited page shows on reload."""

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a line per static file would bury the scheduler's messages."""


class _Scheduler:
    """Calls process-training-jobs every interval with the cron secret, as Cloud Scheduler would.

    Reports cycles that did something, and a failure once until the function answers again.
    """

    def __init__(self, url: str, secret: str, interval: float, out: IO[str]) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {secret}"}
        self._interval = interval
        self._out = out
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dev-scheduler", daemon=True)
        self._last_problem: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(timeout=120) as client:
            while True:
                self._tick(client)
                if self._stopping.wait(self._interval):
                    return

    def _tick(self, client: httpx.Client) -> None:
        summary: dict[str, Any] = {}
        try:
            response = client.post(self._url, headers=self._headers)
            problem = None if response.is_success else f"answered {response.status_code}"
            if problem is None:
                summary = response.json()["data"]
        except httpx.HTTPError as exc:
            problem = f"could not be reached ({type(exc).__name__})"
        except (ValueError, KeyError, TypeError):
            problem = "answered with a body that is not its JSON summary"
        if self._stopping.is_set():
            return
        if problem is not None:
            if problem != self._last_problem:
                self._say(f"process-training-jobs {problem}; retrying every cycle")
            self._last_problem = problem
            return
        if self._last_problem is not None:
            self._say("process-training-jobs answers again")
            self._last_problem = None
        events = [
            f"{summary[key]} {key}"
            for key in ("claimed", "submitted", "completed", "failed", "cancelled")
            if summary.get(key)
        ]
        if events:
            self._say("cycle: " + ", ".join(events))

    def _say(self, message: str) -> None:
        print(f"[scheduler {datetime.now().astimezone():%H:%M:%S}] {message}", file=self._out)
        self._out.flush()


class DevStack:
    """The local system: start() brings every piece up in order, stop() takes them down in
    reverse. Also a context manager."""

    def __init__(self, settings: DevSettings, *, out: IO[str] = sys.stdout) -> None:
        self.settings = settings
        self._out = out
        self._stack = contextlib.ExitStack()
        self._processes: list[ServerProcess] = []
        self.logs_dir = settings.root / "logs"
        # Fresh secrets every run: nothing to configure, nothing that outlives the run.
        self.jwt_secret = secrets.token_urlsafe(32)
        self._cron_secret = secrets.token_urlsafe(32)
        self._cluster_key = secrets.token_urlsafe(32)
        self.postgres = postgres.LocalPostgres(settings.root / "pgdata", settings.pg_port)
        self.urls: dict[str, str] = {}
        self.demo_job_ids: list[str] = []

    def __enter__(self) -> DevStack:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def admin_conninfo(self) -> str:
        """A superuser connection to the dev database, for looking at or arranging rows."""
        return self.postgres.conninfo(DBNAME)

    def start(self) -> None:
        """Start every piece and wait for each; on failure, stop what was started and raise."""
        try:
            # A PostgreSQL left behind by a killed earlier run holds the port: stop it first.
            self.postgres.stop()
            self._check_ports()
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            self._start_postgres()
            self._start_s3()
            self._start_cluster()
            self._start_web()
            self._start_functions()
            self._start_scheduler()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything started, last started first."""
        self._stack.close()
        self._processes.clear()

    def exited(self) -> ServerProcess | None:
        """A child server that has stopped on its own, if any."""
        return next((p for p in self._processes if p.process.poll() is not None), None)

    def access_token(self, user_id: str = DEMO_USER_ID, email: str = DEMO_USER_EMAIL) -> str:
        ttl = timedelta(hours=self.settings.token_ttl_hours)
        return mint_access_token(self.jwt_secret, user_id, ttl=ttl, email=email)

    def monitor_url(
        self, job_id: str, *, token: str | None = None, poll_seconds: float | None = None
    ) -> str:
        """The monitor page on `job_id`, configured through the URL fragment (see web/main.js)."""
        params = {
            "job": job_id,
            "get_job": self.urls["get-job"],
            "cancel_job": self.urls["cancel-job"],
            "token": token or self.access_token(),
        }
        if poll_seconds is not None:
            params["poll"] = f"{poll_seconds:g}"
        # ":" and "/" may stand in a fragment as they are: the URL stays readable.
        return f"{self.urls['web']}/#{urlencode(params, safe=':/')}"

    def _check_ports(self) -> None:
        taken = [
            f"port {port} ({name})"
            for name, port in self.settings.port_settings().items()
            if port and not _port_free(HOST, port)
        ]
        if taken:
            raise PortInUse(
                f"already in use: {', '.join(taken)}. Stop what listens there, or set "
                "the variable in parentheses to another port (0 picks a free one)."
            )

    def _port(self, configured: int) -> int:
        if configured:
            return configured
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            return int(probe.getsockname()[1])

    def _ready(self, name: str, where: str, detail: str = "") -> None:
        print(f"  ready  {name:<22} {where}{'  ' + detail if detail else ''}", file=self._out)
        self._out.flush()

    def _start_postgres(self) -> None:
        if not self.settings.pg_port:
            self.postgres.port = self._port(0)
        self.postgres.start()
        self._stack.callback(self.postgres.stop)
        postgres.drop_database(self.postgres.conninfo(), DBNAME)
        postgres.create_database(self.postgres.conninfo(), DBNAME)
        postgres.apply_schema(self.postgres.conninfo(DBNAME), seed=True)
        with psycopg.connect(self.admin_conninfo) as conn:
            rows = conn.execute(
                "select id::text from training_jobs where user_id = %s order by created_at, id",
                (DEMO_USER_ID,),
            ).fetchall()
        self.demo_job_ids = [row[0] for row in rows]
        self._ready("PostgreSQL", self.postgres.url(DBNAME), "(migrations + seed)")

    def _start_s3(self) -> None:
        port = self._port(self.settings.s3_port)
        endpoint = f"http://{HOST}:{port}"
        log_path = self.logs_dir / "s3.log"
        log = self._stack.enter_context(log_path.open("wb"))
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.local.s3", "--port", str(port), "--seed"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = self._track(ServerProcess("S3 (moto)", process, endpoint))
        client = create_s3_client(
            endpoint_url=endpoint,
            region=local_s3.LOCAL_REGION,
            access_key_id=local_s3.LOCAL_ACCESS_KEY_ID,
            secret_access_key=local_s3.LOCAL_SECRET_ACCESS_KEY,
            max_attempts=1,
        )

        def seeded() -> bool:
            # Ready once the demo dataset is in both buckets, not merely once the port answers.
            for bucket, path in local_s3.DEMO_DATASET_PATHS.items():
                try:
                    client.head_object(Bucket=bucket, Key=path)
                except (BotoCoreError, ClientError):
                    return False
            return True

        _wait_until(seeded, server, log_path)
        self.urls["s3"] = endpoint
        self._ready("S3 (moto)", endpoint, "(lora-datasets, training-files)")

    def _start_cluster(self) -> None:
        server = start_cluster_simulator(
            api_key=self._cluster_key,
            host=HOST,
            port=self.settings.cluster_port,
            steps_per_second=self.settings.steps_per_second,
            init_seconds=self.settings.init_seconds,
        )
        self._track(server)
        self.urls["cluster"] = server.base_url
        pace = f"({self.settings.steps_per_second:g} steps/s)"
        self._ready("cluster simulator", server.base_url, pace)

    def _start_functions(self) -> None:
        database = {"DATABASE_URL": self.postgres.url(DBNAME, postgres.APP_USER)}
        cluster = {
            "GPU_CLUSTER_API_URL": self.urls["cluster"],
            "GPU_CLUSTER_API_KEY": self._cluster_key,
        }
        web_port = self.urls["web"].rsplit(":", 1)[1]
        user_facing = {
            **database,
            "SUPABASE_JWT_SECRET": self.jwt_secret,
            # Both spellings of the page's origin, for whoever types localhost.
            "ALLOWED_ORIGINS": f"{self.urls['web']},http://localhost:{web_port}",
        }
        processor = {
            **database,
            **cluster,
            "STORAGE_BACKEND": "s3",
            "S3_ENDPOINT_URL": self.urls["s3"],
            "S3_ACCESS_KEY_ID": local_s3.LOCAL_ACCESS_KEY_ID,
            "S3_SECRET_ACCESS_KEY": local_s3.LOCAL_SECRET_ACCESS_KEY,
            "CRON_SECRET": self._cron_secret,
            # The scheduler's interval is the polling pace: poll every active job on every call.
            "PROCESSOR_POLL_INTERVAL_SECONDS": "0",
        }
        for name, env, port in (
            ("process-training-jobs", processor, self.settings.processor_port),
            ("get-job", user_facing, self.settings.get_job_port),
            # cancel-job tells the cluster at once; the processor only when that fails.
            ("cancel-job", {**user_facing, **cluster}, self.settings.cancel_job_port),
        ):
            target = name.replace("-", "_")
            log = self._stack.enter_context((self.logs_dir / f"{name}.log").open("wb"))
            server = start_function(
                FUNCTIONS / target / "main.py",
                target,
                env=env,
                host=HOST,
                port=port,
                stdout=log,
            )
            self._track(server)
            self.urls[name] = server.base_url
            self._ready(name, server.base_url)

    def _start_web(self) -> None:
        if not UPLOT.exists():
            raise RuntimeError("the monitor page's chart library is missing: run `npm ci` in web/")
        handler = functools.partial(_StaticFiles, directory=str(WEB))
        server = ThreadingHTTPServer((HOST, self.settings.web_port), handler)
        server.daemon_threads = True
        port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, name="dev-web", daemon=True)
        thread.start()

        def stop_web() -> None:
            server.shutdown()
            thread.join()
            server.server_close()

        self._stack.callback(stop_web)
        self.urls["web"] = f"http://{HOST}:{port}"
        self._ready("monitor page", self.urls["web"])

    def _start_scheduler(self) -> None:
        scheduler = _Scheduler(
            self.urls["process-training-jobs"],
            self._cron_secret,
            self.settings.scheduler_interval_seconds,
            self._out,
        )
        scheduler.start()
        self._stack.callback(scheduler.stop)
        interval = f"every {self.settings.scheduler_interval_seconds:g} s"
        self._ready("scheduler", f"calls process-training-jobs {interval}")

    def _track(self, server: ServerProcess) -> ServerProcess:
        self._processes.append(server)
        self._stack.callback(server.stop)
        return server


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        # As the servers themselves bind: connections of an earlier run still in TIME_WAIT do
        # not make the port taken, only a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _wait_until(
    ready: Callable[[], bool], server: ServerProcess, log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited while starting:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} was not ready within {timeout:g} s; see {log}")
        time.sleep(_HEALTH_POLL_SECONDS)


def _tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextlib.contextmanager
def _stop_requested() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM, for as long as the block runs."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve() -> int:
    """Run the stack in this process until SIGTERM or SIGINT, or until our parent goes away."""
    try:
        settings = load(DevSettings)
    except ConfigurationError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    parent = os.getppid()
    print("Starting the LoRA runner locally...", flush=True)
    stack = DevStack(settings)
    with _stop_requested() as stop:
        try:
            stack.start()
        except (RuntimeError, OSError) as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            return 1
        try:
            first, *others = stack.demo_job_ids
            print(
                f"\nLogs: {stack.logs_dir}\n"
                f"psql: psql '{stack.postgres.url(DBNAME)}'\n"
                "\nOpen the training monitor on the demo job:\n\n"
                f"  {stack.monitor_url(first)}\n",
                flush=True,
            )
            if others:
                print(f"Other demo jobs (put their id in job=): {', '.join(others)}")
            print("Press Ctrl-C to stop.\n", flush=True)
            while not stop.wait(0.5) and os.getppid() == parent:
                crashed = stack.exited()
                if crashed is not None:
                    print(
                        f"\nerror: {crashed.name} stopped unexpectedly; its log is in "
                        f"{stack.logs_dir} (or above, for the cluster simulator)",
                        file=sys.stderr,
                    )
                    return 1
        finally:
            print("\nStopping...", flush=True)
            stack.stop()
            print("Stopped.", flush=True)
    return 0


def supervise() -> int:
    """Run :func:`serve` in a session of its own and pass Ctrl-C on to it as one SIGTERM.

    A terminal sends Ctrl-C's SIGINT to every process of its foreground group: the servers would
    each shut down on their own while the stack stops them too, which leaves tracebacks and, at
    worst, orphaned workers. Out of that group, only the stack stops them, in order.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "infra.local.dev", "--serve"], cwd=REPO, start_new_session=True
    )

    def forward(signum: int, frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.dev",
        description="Run the LoRA runner locally: settings come from the environment "
        "(PG_PORT, DEV_*_PORT, DEV_SCHEDULER_INTERVAL_SECONDS, DEV_STEPS_PER_SECOND, ...).",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="run the stack in this process, in the caller's process group",
    )
    args = parser.parse_args(argv)
    return serve() if args.serve else supervise()


if __name__ == "__main__":
    sys.exit(main())
