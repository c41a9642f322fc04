"""`make dev`'s servers: the cluster (the simulator, or a local Ray head), the three functions and
the monitor page.

Each ``start_*`` function registers what stops its server on the caller's exit stack.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.local import s3 as local_s3
from infra.local.dev_settings import HOST, REPO
from infra.local.processes import ServerProcess, start_cluster_simulator
from infra.local.processes import start_function as serve_function

if TYPE_CHECKING:
    # Imported when used: the simulator mode needs no Ray installed.
    from infra.local.ray_head import RayHead

WEB = REPO / "web"
FUNCTIONS = REPO / "functions"
UPLOT = WEB / "node_modules" / "uplot" / "dist" / "uPlot.esm.js"
# In the order they start.
FUNCTION_NAMES = ("process-training-jobs", "get-job", "cancel-job")


def start_cluster(
    stack: contextlib.ExitStack,
    *,
    api_key: str,
    port: int,
    steps_per_second: float,
    init_seconds: float,
) -> ServerProcess:
    """The cluster simulator on `port` (0: a free one), once healthy."""
    server = start_cluster_simulator(
        api_key=api_key,
        host=HOST,
        port=port,
        steps_per_second=steps_per_second,
        init_seconds=init_seconds,
    )
    stack.callback(server.stop)
    return server


RAY_TRAINER = "python -m trainer --device cpu"


def start_ray_cluster(stack: contextlib.ExitStack, *, token: str, log_path: Path) -> RayHead:
    """A local Ray head on 127.0.0.1, once its Jobs API answers. It claims the GPU types the
    demo jobs ask for (an A100, two L4s), so their jobs start; the trainer runs on the CPU."""
    from infra.local.ray_head import start_ray_head

    log = stack.enter_context(log_path.open("wb"))
    head = start_ray_head(
        token=token,
        num_gpus=4,
        accelerator_types=("A100", "L4"),
        # Two cores: more OpenMP threads than cores wait on each other for seconds a step.
        env={"OMP_NUM_THREADS": "1"},
        log=log,
    )
    stack.callback(head.stop)
    return head


def start_web(stack: contextlib.ExitStack, port: int) -> str:
    """The monitor page (``web/``) as static files from a thread of this process; its URL."""
    if not UPLOT.exists():
        raise RuntimeError("the monitor page's chart library is missing: run `npm ci` in web/")
    handler = functools.partial(_StaticFiles, directory=str(WEB))
    server = ThreadingHTTPServer((HOST, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="dev-web", daemon=True)
    thread.start()

    def stop_web() -> None:
        server.shutdown()
        thread.join()
        server.server_close()

    stack.callback(stop_web)
    return f"http://{HOST}:{server.server_address[1]}"


def function_environments(
    *,
    database_url: str,
    s3_url: str,
    cluster_url: str,
    cluster_key: str,
    web_url: str,
    jwt_secret: str,
    cron_secret: str,
    ray: bool = False,
) -> dict[str, dict[str, str]]:
    """Each function's environment, by the function's name; `ray` points the cluster settings
    at a local Ray head's Jobs API instead of the simulator."""
    database = {"DATABASE_URL": database_url}
    cluster = {"GPU_CLUSTER_API_URL": cluster_url, "GPU_CLUSTER_API_KEY": cluster_key}
    web_port = web_url.rsplit(":", 1)[1]
    user_facing = {
        **database,
        "SUPABASE_JWT_SECRET": jwt_secret,
        # Both spellings of the page's origin, for whoever types localhost.
        "ALLOWED_ORIGINS": f"{web_url},http://localhost:{web_port}",
    }
    storage = {
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": s3_url,
        "S3_ACCESS_KEY_ID": local_s3.LOCAL_ACCESS_KEY_ID,
        "S3_SECRET_ACCESS_KEY": local_s3.LOCAL_SECRET_ACCESS_KEY,
    }
    processor = {
        **database,
        **cluster,
        **storage,
        "CRON_SECRET": cron_secret,
        # The scheduler's interval is the polling pace: poll every active job on every call.
        "PROCESSOR_POLL_INTERVAL_SECONDS": "0",
    }
    if ray:
        # The trainer on the local Ray head runs on the CPU, whatever GPUs the head claims.
        backend = {"GPU_CLUSTER_BACKEND": "ray", "RAY_TRAINER_ENTRYPOINT": RAY_TRAINER}
        processor = {**processor, **backend}
        cluster = {**cluster, **backend}
    return {
        "process-training-jobs": processor,
        # get-job signs the download URLs of completed jobs' adapters.
        "get-job": {**user_facing, **storage},
        # cancel-job tells the cluster at once; the processor only when that fails.
        "cancel-job": {**user_facing, **cluster},
    }


def start_function(
    stack: contextlib.ExitStack, name: str, *, env: dict[str, str], port: int, log_path: Path
) -> ServerProcess:
    """The function `name` (e.g. get-job) served by functions-framework on `port`, once it answers;
    its log lines go to `log_path`."""
    target = name.replace("-", "_")
    log = stack.enter_context(log_path.open("wb"))
    server = serve_function(
        FUNCTIONS / target / "main.py", target, env=env, host=HOST, port=port, stdout=log
    )
    stack.callback(server.stop)
    return server


class _StaticFiles(SimpleHTTPRequestHandler):
    """web/ as files; never cached, so an edited page shows on reload."""

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a line per static file would bury the scheduler's messages."""
