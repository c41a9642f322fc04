"""Starting and stopping the local stack's servers as child processes, on free local ports.

The port is bound here and the listening socket handed to the child, so no other process can
take it between choosing it and serving on it (the race of "find a free port, then start").
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

# Children run `python -m infra.local...` from here, whatever the caller's working directory.
_REPO_ROOT = Path(__file__).resolve().parents[2]
_POLL_SECONDS = 0.05
_BACKLOG = 2048


@dataclass
class ServerProcess:
    """A server running as a child process, reachable at ``base_url``."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the server to shut down, and kill it if it has not within ``timeout``."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A socket listening on ``host:port``; port 0 picks a free one."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def start_server(
    name: str,
    argv: Sequence[str],
    *,
    sock: socket.socket,
    health_path: str,
    startup_timeout: float = 20.0,
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Run ``argv`` with ``{fd}`` replaced by the socket's descriptor; wait until it is healthy.

    The socket is closed in this process once the child holds it.
    """
    host, port = sock.getsockname()[:2]
    base_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    fd = sock.fileno()
    try:
        process = subprocess.Popen(
            [part.replace("{fd}", str(fd)) for part in argv],
            pass_fds=(fd,),
            cwd=_REPO_ROOT,
            env={**os.environ, **(env or {})},
        )
    finally:
        sock.close()
    server = ServerProcess(name, process, base_url)
    try:
        _wait_until_healthy(server, base_url + health_path, startup_timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_healthy(
    server: ServerProcess, url: str, timeout: float, *, any_answer: bool = False
) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            code = server.process.poll()
            if code is not None:
                raise RuntimeError(f"{server.name} exited with status {code} while starting")
            try:
                status = client.get(url).status_code
                if status == 200 or (any_answer and status < 500):
                    return
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(_POLL_SECONDS)
    raise RuntimeError(f"{server.name} was not healthy at {url} within {timeout:g} s: {last_error}")


def start_cluster_simulator(
    *,
    api_key: str,
    host: str = "127.0.0.1",
    port: int = 0,
    steps_per_second: float = 5.0,
    init_seconds: float = 2.0,
    latency: float = 0.0,
    log_level: str = "warning",
    startup_timeout: float = 20.0,
) -> ServerProcess:
    """Start the cluster simulator on ``host:port`` (a free port by default), once healthy.

    Use it as a context manager, or call :meth:`ServerProcess.stop`, to stop it.
    """
    argv = [
        sys.executable,
        "-m",
        "infra.local.cluster_simulator",
        "--fd",
        "{fd}",
        "--steps-per-second",
        str(steps_per_second),
        "--init-seconds",
        str(init_seconds),
        "--latency",
        str(latency),
        "--log-level",
        log_level,
    ]
    return start_server(
        "cluster simulator",
        argv,
        sock=listening_socket(host, port),
        health_path="/_sim/health",
        startup_timeout=startup_timeout,
        # The key travels in the environment, where other users cannot read it in `ps`.
        env={"CLUSTER_SIM_API_KEY": api_key},
    )


def start_function(
    source: Path,
    target: str,
    *,
    env: Mapping[str, str],
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 30.0,
    stdout: IO[bytes] | None = None,
) -> ServerProcess:
    """Serve a cloud function with functions-framework, as Cloud Functions would; once it answers.

    functions-framework binds its own port, so a free one is chosen first (port 0). Any answer
    below 500 to a GET counts as started: a POST-only function answers 405. `stdout` receives
    the function's log lines (inherited when None).
    """
    if port == 0:
        with listening_socket(host) as probe:
            port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("functions-framework")),
            "--target",
            target,
            "--source",
            str(source),
            "--host",
            host,
            "--port",
            str(port),
        ],
        cwd=_REPO_ROOT,
        env={**os.environ, **env},
        stdout=stdout,
    )
    server = ServerProcess(f"function {target}", process, f"http://{host}:{port}")
    try:
        _wait_until_healthy(server, server.base_url + "/", startup_timeout, any_answer=True)
    except BaseException:
        server.stop()
        raise
    return server
