"""A local Ray head for the tests and ``make dev``: loopback only, fake GPUs, its own temp dir.

Ray's Jobs REST API is the second cluster backend (:mod:`shared.cluster.ray`); this module starts
a real one-node Ray cluster to run it against, on a machine without GPUs:

- **Loopback only.** ``--node-ip-address=127.0.0.1`` alone is not enough: Ray replaces a loopback
  node address by the host's outward address (``resolve_ip_for_localhost``) unless
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` says the cluster is single-machine, and only then do the
  GCS, the raylet, the dashboard agent, the runtime-env agent and the Ray Client server bind to
  127.0.0.1 (the GCS and raylet listen on 0.0.0.0 otherwise). ``--dashboard-host=127.0.0.1``
  keeps the dashboard (which serves the Jobs API) on loopback. :meth:`RayHead.listeners` lists
  what every process of the head listens on, so a test can check it.
- **Fake GPUs.** ``--num-gpus`` and an ``accelerator_type:<TYPE>`` resource per GPU type make the
  head accept jobs that ask for GPUs; the trainer then finds no CUDA device and runs on the CPU.
- **Own temp dir, own ports.** Every port Ray would otherwise fix (6379, 8265, 10001, 52365, and
  the metrics ports 44217 and 44227) is chosen free, and the session lives in a fresh temp dir,
  so two heads (two test sessions, or a test session next to ``make dev``) do not meet.
- **Clean stop.** ``ray stop`` stops every Ray process of the machine, another session's too.
  Instead every process of this head carries a marker in its environment (inherited down to the
  job drivers), and :meth:`RayHead.stop` signals exactly those: the raylet first, then the rest,
  the GCS last, as ``ray stop`` orders them, and SIGKILL for what outlives the grace period.
- **The project's Python.** The head runs with this interpreter's ``bin`` first on ``PATH`` and
  the repository as its working directory, so a job's ``python -m trainer`` (or a test's
  ``python -m tests.ray.fake_trainer``) imports this checkout's code.

``python -m infra.local.ray_head`` runs one in the foreground until Ctrl-C, printing its URL.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx
import psutil  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# The environment variable that marks every process of one head (its value: the head's own id).
MARKER = "LORA_RAY_HEAD_ID"
_LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Listener:
    """One socket a head's process listens on (TCP) or is bound to (UDP)."""

    pid: int
    process: str
    protocol: str
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        return self.address in _LOOPBACK


@dataclass
class RayHead:
    """A running local Ray head. ``dashboard_url`` serves the Jobs REST API; ``token`` is what
    ``Authorization: Bearer`` must carry (None when the head runs without token auth)."""

    dashboard_url: str
    token: str | None
    temp_dir: Path
    head_id: str
    session_id: int | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    _stopped: bool = False

    def processes(self) -> list[psutil.Process]:
        """This head's live processes: those of the session ``ray start`` began, those whose
        environment carries the head's marker (job drivers start sessions of their own), and
        their descendants. The marker alone misses Ray's workers and agents: their process
        titles overwrite the environment that ``/proc`` shows."""
        return _own_processes(self.head_id, self.session_id)

    def listeners(self) -> list[Listener]:
        """What this head's processes listen on: every TCP listening socket and bound UDP
        socket."""
        found: list[Listener] = []
        for process in self.processes():
            try:
                name = process.name()
                connections = process.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            for conn in connections:
                tcp = conn.type == socket.SOCK_STREAM
                if tcp and conn.status != psutil.CONN_LISTEN:
                    continue
                if not tcp and conn.raddr:
                    continue  # a connected UDP socket: a client, not a listener
                found.append(
                    Listener(
                        pid=process.pid,
                        process=name,
                        protocol="tcp" if tcp else "udp",
                        address=conn.laddr.ip,
                        port=conn.laddr.port,
                    )
                )
        return found

    def stop(self, grace_seconds: float = 3.0) -> None:
        """Stop every process of this head (and its jobs), then remove its temp dir."""
        if self._stopped:
            return
        self._stopped = True
        # ``ray stop``'s order: the raylet before the processes that share its fate, the GCS
        # after everything that reports to it.
        for bucket in ("raylet", None, "gcs_server"):
            procs = [p for p in self.processes() if _bucket(p) == bucket]
            _terminate(procs, grace_seconds)
        # Anything started while stopping (a worker the raylet was spawning) goes too.
        _terminate(self.processes(), grace_seconds)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_ray_head(
    *,
    token: str | None = None,
    num_cpus: int = 2,
    num_gpus: int = 2,
    accelerator_types: Sequence[str] = ("A100",),
    dashboard_port: int = 0,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 120.0,
    log: IO[bytes] | None = None,
) -> RayHead:
    """Start a Ray head on 127.0.0.1 and wait until its Jobs API answers.

    ``token`` turns on Ray's token authentication (``RAY_AUTH_MODE=token``): every request then
    needs ``Authorization: Bearer <token>``. ``accelerator_types`` are the GPU types the head
    claims to have (Ray's names: ``A100``, ``H100``, ...). ``env`` is added to the head's
    environment, and so to every job's (e.g. ``RAY_JOB_START_TIMEOUT_SECONDS``). ``dashboard_port``
    0 picks a free port. ``log`` receives ``ray start``'s output (discarded when None).
    """
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        raise RuntimeError(f"{ray} not found: install the `ray` extra (pip install -e '.[ray]')")
    head_id = secrets.token_hex(8)
    # Unix socket paths under the temp dir must stay short (107 bytes): /tmp, not a long $TMPDIR.
    # mkdtemp makes it private to this user.
    short_root = "/tmp" if Path("/tmp").is_dir() else None  # noqa: S108
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-lora-", dir=short_root))
    resources = {f"accelerator_type:{name}": 1.0 for name in accelerator_types}
    ports = _free_ports(7)
    dashboard_port = dashboard_port or ports[0]
    argv = [
        str(ray),
        "start",
        "--head",
        f"--node-ip-address={HOST}",
        f"--dashboard-host={HOST}",
        f"--dashboard-port={dashboard_port}",
        f"--port={ports[1]}",
        f"--dashboard-agent-listen-port={ports[2]}",
        f"--ray-client-server-port={ports[3]}",
        f"--runtime-env-agent-port={ports[4]}",
        f"--temp-dir={temp_dir}",
        f"--num-cpus={num_cpus}",
        f"--num-gpus={num_gpus}",
        f"--resources={json.dumps(resources)}",
        # The object store is for tasks' objects; a job that only runs a driver needs little.
        "--object-store-memory=100000000",
        "--disable-usage-stats",
        "--log-style=record",
        "--log-color=false",
    ]
    bin_dir = str(Path(sys.executable).parent)
    head_env = {
        **os.environ,
        **(env or {}),
        MARKER: head_id,
        # A single-machine cluster: keep the loopback node address (see the module docstring).
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Prometheus ports Ray otherwise fixes (44227, 44217), chosen free like the others.
        "DASHBOARD_METRIC_PORT": str(ports[5]),
        "AUTOSCALER_METRIC_PORT": str(ports[6]),
        "RAY_AUTH_MODE": "token" if token else "disabled",
        # Jobs run `python -m ...`: this interpreter, with this checkout importable.
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "VIRTUAL_ENV": str(Path(bin_dir).parent),
    }
    head_env.pop("RAY_ADDRESS", None)
    if token:
        head_env["RAY_AUTH_TOKEN"] = token
    else:
        head_env.pop("RAY_AUTH_TOKEN", None)
    head = RayHead(
        dashboard_url=f"http://{HOST}:{dashboard_port}",
        token=token,
        temp_dir=temp_dir,
        head_id=head_id,
        resources={"CPU": num_cpus, "GPU": num_gpus, **resources},
    )
    try:
        # Its own session: Ctrl-C in a terminal reaches the caller, not the cluster, and the
        # session id tells this head's processes apart.
        starter = subprocess.Popen(
            argv,
            cwd=REPO,
            env=head_env,
            stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        head.session_id = starter.pid
        try:
            code = starter.wait(timeout=startup_timeout)
        except subprocess.TimeoutExpired:
            starter.kill()
            starter.wait()
            raise RuntimeError(f"`ray start` did not finish within {startup_timeout:g} s") from None
        if code != 0:
            raise RuntimeError(  # noqa: TRY301 - the head is stopped below, whatever failed
                f"`ray start` exited with status {code}; see {temp_dir}/session_latest/logs"
            )
        _wait_until_ready(head, startup_timeout)
    except BaseException:
        head.stop()
        raise
    return head


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on loopback right now."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _wait_until_ready(head: RayHead, timeout: float) -> None:
    """Wait until the Jobs API lists jobs (the job manager is up, not just the dashboard)."""
    headers = {"Authorization": f"Bearer {head.token}"} if head.token else {}
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(base_url=head.dashboard_url, headers=headers, timeout=5.0) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get("/api/jobs/")
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(_POLL_SECONDS)
    raise RuntimeError(f"the Ray head's Jobs API did not answer within {timeout:g} s: {last}")


def _own_processes(head_id: str, session_id: int | None) -> list[psutil.Process]:
    uid, me = os.getuid(), os.getpid()
    roots: dict[int, psutil.Process] = {}
    for process in psutil.process_iter():
        try:
            if process.uids().real != uid or process.pid == me:
                continue
            if (session_id is not None and os.getsid(process.pid) == session_id) or (
                process.environ().get(MARKER) == head_id
            ):
                roots[process.pid] = process
        except (psutil.Error, OSError):
            continue
    found = dict(roots)
    for process in roots.values():
        try:
            found.update((child.pid, child) for child in process.children(recursive=True))
        except psutil.Error:
            continue
    return [p for p in found.values() if p.pid != me]


def _bucket(process: psutil.Process) -> str | None:
    try:
        name = str(process.name())
    except psutil.Error:
        return None
    return name if name in ("raylet", "gcs_server") else None


def _terminate(processes: list[psutil.Process], grace_seconds: float) -> None:
    for process in processes:
        with suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace_seconds)
    for process in alive:
        with suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=grace_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a local Ray head in the foreground until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="the dashboard's port (0: free)")
    parser.add_argument("--num-gpus", type=int, default=2)
    parser.add_argument("--gpu-type", action="append", dest="gpu_types", default=None)
    parser.add_argument(
        "--token-env",
        default="GPU_CLUSTER_API_KEY",
        help="the environment variable holding the token (token auth is off when it is unset)",
    )
    args = parser.parse_args(argv)
    token = os.environ.get(args.token_env) or None
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    with start_ray_head(
        token=token,
        num_gpus=args.num_gpus,
        accelerator_types=tuple(args.gpu_types or ("A100",)),
        dashboard_port=args.port,
        log=sys.stderr.buffer,
    ) as head:
        print(
            f"Ray head ready in {time.monotonic() - started:.1f} s at {head.dashboard_url} "
            f"(token auth {'on' if token else 'off'}); Ctrl-C stops it",
            flush=True,
        )
        while not stop:
            time.sleep(_POLL_SECONDS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
