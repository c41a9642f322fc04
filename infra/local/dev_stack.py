"""The local system `make dev` runs: every piece started in order, stopped in reverse.

1. PostgreSQL with the Supabase bootstrap, the migrations and the seed, in a fresh database;
2. moto's S3 server with both buckets and the demo dataset in each;
3. the cluster simulator, slow enough to watch a run, or with CLUSTER=ray a local Ray head that
   runs the real trainer on a tiny model built here;
4. the monitor page (``web/``) as static files;
5. the three functions, served by functions-framework as Cloud Functions would, open to the
   page's origin (CORS);
6. a scheduler that calls process-training-jobs with the cron secret every few seconds.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import IO

import psycopg

from infra.local import postgres
from infra.local.dev_monitor_link import mint_access_token, monitor_url
from infra.local.dev_scheduler import Scheduler
from infra.local.dev_servers import (
    FUNCTION_NAMES,
    function_environments,
    start_cluster,
    start_function,
    start_ray_cluster,
    start_web,
)
from infra.local.dev_settings import DevSettings, check_ports, port_or_free
from infra.local.dev_stores import (
    DBNAME,
    DEMO_USER_EMAIL,
    DEMO_USER_ID,
    start_database,
    start_s3,
)
from infra.local.processes import ServerProcess


class StartInterrupted(Exception):
    """A stop was asked for while the stack was starting; what was started is left to stop()."""


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

    def start(self, interrupted: Callable[[], bool] | None = None) -> None:
        """Start every piece and wait for each; on failure, stop what was started and raise.

        `interrupted` is asked before each piece: once it answers True, :class:`StartInterrupted`
        is raised and what was started is left to :meth:`stop`.
        """
        try:
            self._start_pieces(interrupted or (lambda: False))
        except StartInterrupted:
            raise
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
        token = token or self.access_token()
        return monitor_url(self.urls, job_id, token=token, poll_seconds=poll_seconds)

    def _start_pieces(self, interrupted: Callable[[], bool]) -> None:
        # A PostgreSQL left behind by a killed earlier run holds the port: stop it first.
        self.postgres.stop()
        check_ports(self.settings)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        pieces: list[Callable[[], None]] = [
            self._start_postgres,
            self._start_s3,
            self._start_cluster,
            self._start_web,
            *(functools.partial(self._start_function, name) for name in FUNCTION_NAMES),
            self._start_scheduler,
        ]
        for piece in pieces:
            if interrupted():
                raise StartInterrupted
            piece()

    def _ready(self, name: str, where: str, detail: str = "") -> None:
        print(f"  ready  {name:<22} {where}{'  ' + detail if detail else ''}", file=self._out)
        self._out.flush()

    def _start_postgres(self) -> None:
        if not self.settings.pg_port:
            self.postgres.port = port_or_free(0)
        self.demo_job_ids = start_database(self.postgres, self._stack)
        self._ready("PostgreSQL", self.postgres.url(DBNAME), "(migrations + seed)")

    def _start_s3(self) -> None:
        port = port_or_free(self.settings.s3_port)
        server = start_s3(port, self.logs_dir / "s3.log", self._stack)
        self._processes.append(server)
        self.urls["s3"] = server.base_url
        self._ready("S3 (moto)", server.base_url, "(lora-datasets, training-files)")

    def _start_cluster(self) -> None:
        if self.settings.cluster == "ray":
            self._start_ray()
            return
        server = start_cluster(
            self._stack,
            api_key=self._cluster_key,
            port=self.settings.cluster_port,
            steps_per_second=self.settings.steps_per_second,
            init_seconds=self.settings.init_seconds,
        )
        self._processes.append(server)
        self.urls["cluster"] = server.base_url
        pace = f"({self.settings.steps_per_second:g} steps/s)"
        self._ready("cluster simulator", server.base_url, pace)

    def _start_ray(self) -> None:
        # The demo jobs train for real: a tiny model built here (no download), loaded through
        # the same from_pretrained path as a real one.
        from trainer.tiny_model import build

        model = build(self.settings.root / "tiny-model")
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            conn.execute(
                # A learning rate a tiny random model visibly learns at, over a minute or so.
                "update training_jobs set hyperparameters = hyperparameters"
                " || jsonb_build_object('base_model', %s::text, 'learning_rate', 0.003,"
                "                       'epochs', 6) where status = 'queued'",
                (str(model),),
            )
        head = start_ray_cluster(
            self._stack, token=self._cluster_key, log_path=self.logs_dir / "ray.log"
        )
        self.urls["cluster"] = head.dashboard_url
        self._ready("Ray head", head.dashboard_url, f"(real trainer on {model.name})")

    def _start_web(self) -> None:
        self.urls["web"] = start_web(self._stack, self.settings.web_port)
        self._ready("monitor page", self.urls["web"])

    def _start_function(self, name: str) -> None:
        environments = function_environments(
            database_url=self.postgres.url(DBNAME, postgres.APP_USER),
            s3_url=self.urls["s3"],
            cluster_url=self.urls["cluster"],
            cluster_key=self._cluster_key,
            web_url=self.urls["web"],
            jwt_secret=self.jwt_secret,
            cron_secret=self._cron_secret,
            ray=self.settings.cluster == "ray",
        )
        ports = {
            "process-training-jobs": self.settings.processor_port,
            "get-job": self.settings.get_job_port,
            "cancel-job": self.settings.cancel_job_port,
        }
        server = start_function(
            self._stack,
            name,
            env=environments[name],
            port=ports[name],
            log_path=self.logs_dir / f"{name}.log",
        )
        self._processes.append(server)
        self.urls[name] = server.base_url
        self._ready(name, server.base_url)

    def _start_scheduler(self) -> None:
        scheduler = Scheduler(
            self.urls["process-training-jobs"],
            self._cron_secret,
            self.settings.scheduler_interval_seconds,
            self._out,
        )
        scheduler.start()
        self._stack.callback(scheduler.stop)
        interval = f"every {self.settings.scheduler_interval_seconds:g} s"
        self._ready("scheduler", f"calls process-training-jobs {interval}")
