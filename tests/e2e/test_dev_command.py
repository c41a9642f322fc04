"""`python -m infra.local.dev`, the command `make dev` runs: its settings, its ports, Ctrl-C.

Ctrl-C is sent as a terminal sends it, SIGINT to the command's whole process group, at random
moments after its first line (printed once it takes Ctrl-C): while each piece starts, while
everything runs, and again while it all stops; 50 tries in all. Each try starts the command in a
fresh folder with a fresh database, so no try carries anything over that could hide a fault; a
few tries run at once to keep the file to a few minutes. The moments come from a fixed seed
(``DEV_CTRL_C_SEED`` sets another), and a failure names the seed, the try and its moments, so it
reproduces.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from infra.local.dev import DevSettings, DevStack, PortInUse
from shared.config import load
from shared.errors import ConfigurationError
from tests.e2e.conftest import dev_root

REPO = Path(__file__).resolve().parents[2]
PORT_SETTINGS = [
    "PG_PORT",
    "DEV_S3_PORT",
    "DEV_CLUSTER_PORT",
    "DEV_PROCESSOR_PORT",
    "DEV_GET_JOB_PORT",
    "DEV_CANCEL_JOB_PORT",
    "DEV_WEB_PORT",
]
SEED = int(os.environ.get("DEV_CTRL_C_SEED", "20260609"))
# The pieces in the order they start, by the name on their "ready" line.
PIECES = [
    "PostgreSQL",
    "S3 (moto)",
    "cluster simulator",
    "monitor page",
    "process-training-jobs",
    "get-job",
    "cancel-job",
    "scheduler",
]
# 50 tries: the measured start and the first test's, then these. Most stop a stack that is
# starting, which costs less than a full start and a full stop.
TRIES_PER_PIECE = 5
RUNNING_TRIES = 4
SHUTDOWN_TRIES = 4
# Tries at once: a starting stack keeps most of a core busy.
PARALLEL_TRIES = min(4, (os.cpu_count() or 1) + 1)
# Generous: a stack stops in a few seconds, or in 5 s per server that ignores SIGTERM.
STOP_TIMEOUT = 60.0
START_TIMEOUT = 120.0
# Every process the command starts inherits this variable: it finds them, orphans included.
TRY_VARIABLE = "LORA_DEV_CTRL_C_TRY"
FIRST_LINE = "Starting the LoRA runner locally..."
RUNNING_LINE = "Press Ctrl-C to stop."
STOPPING_LINE = "Stopping..."


def _ready_line(piece: str) -> str:
    return f"  ready  {piece} "


def _rng(kind: str, attempt: int) -> random.Random:
    """The random moments of one try, the same on every run with the same seed."""
    return random.Random(f"{SEED}:{kind}:{attempt}")  # noqa: S311 - reproducible, not a secret


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _processes_with(variable: str, value: str) -> list[int]:
    """The processes whose environment holds `variable=value`."""
    wanted = f"{variable}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if wanted in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


def _listeners(port: int) -> set[int]:
    """The processes that hold a socket listening on `port` (IPv4)."""
    sockets = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state, inode = (line.split()[i] for i in (1, 3, 9))
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
            sockets.add(f"socket:[{inode}]")
    holders = set()
    for entry in Path("/proc").iterdir() if sockets else ():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) in sockets for fd in (entry / "fd").iterdir()):
                    holders.add(int(entry.name))
    return holders


def _command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return f"pid {pid}"


@dataclass
class DevCommand:
    """`python -m infra.local.dev` on free ports in `root`, in a session of its own as a
    terminal's foreground group, its output read as it comes."""

    root: Path
    tag: str = field(default_factory=lambda: secrets.token_hex(8))
    lines: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        env = {
            **os.environ,
            **dict.fromkeys(PORT_SETTINGS, "0"),
            "DEV_ROOT": str(self.root),
            "CLUSTER": "simulator",
            "DEV_STEPS_PER_SECOND": "20",
            "DEV_SCHEDULER_INTERVAL_SECONDS": "0.5",
            TRY_VARIABLE: self.tag,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infra.local.dev"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append((time.monotonic(), line))
                self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(line for _, line in self.lines)

    def seen(self, prefix: str) -> float | None:
        """When the first line starting with `prefix` was read, if one was."""
        with self._changed:
            return next((at for at, line in self.lines if line.startswith(prefix)), None)

    def wait_for(self, prefix: str, timeout: float = START_TIMEOUT) -> float | None:
        """When the first line starting with `prefix` was read; None if the command exited or
        `timeout` passed first."""
        with self._changed:
            self._changed.wait_for(
                lambda: self.seen(prefix) is not None or self.process.poll() is not None,
                timeout,
            )
        return self.seen(prefix)

    def ctrl_c(self) -> None:
        # Only to a command not yet reaped: a reaped one's group id may belong to another.
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)

    def ports(self) -> set[int]:
        """The ports in what the command has printed so far."""
        return {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", self.output)}

    def left_running(self) -> list[int]:
        return _processes_with(TRY_VARIABLE, self.tag)

    def kill(self) -> None:
        """Kill what this command started and is still running, after a failure."""
        for pid in self.left_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()

    def problems_stopping(self) -> list[str]:
        """What is wrong with how the command stopped: it must exit 0 within STOP_TIMEOUT after
        its last Ctrl-C, print no traceback, and leave nothing behind: no process, no
        PostgreSQL, no listener on a port it printed."""
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            return [f"still running {STOP_TIMEOUT:g} s after Ctrl-C"]
        self._reader.join(STOP_TIMEOUT)
        printed = self.output
        problems = []
        if self.process.returncode != 0:
            problems.append(f"exit status {self.process.returncode}")
        if not printed.rstrip().endswith("Stopped."):
            problems.append("the last line is not 'Stopped.'")
        if "Traceback" in printed:
            problems.append("a traceback")
        left = set(self.left_running())
        if left:
            problems.append(f"left running: {', '.join(map(_command_line, left))}")
        # A port it freed may be taken by another program since: only its own listeners count.
        held = sorted(port for port in self.ports() if _listeners(port) & left)
        if held:
            problems.append(f"ports still listening: {held}")
        if (self.root / "pgdata" / "postmaster.pid").exists():
            problems.append("PostgreSQL left running")
        if left:
            self.kill()
        return problems


@contextlib.contextmanager
def dev_command() -> Iterator[DevCommand]:
    with dev_root() as root:
        command = DevCommand(root)
        try:
            yield command
        finally:
            if command.process.poll() is None:
                command.kill()


@dataclass(frozen=True)
class Moment:
    """A moment to send Ctrl-C: `after` seconds after the first line starting with `anchor`."""

    anchor: str
    after: float

    def __str__(self) -> str:
        return f"{self.after:.3f} s after {self.anchor.strip()!r}"


def _try(name: str, moments: Sequence[Moment]) -> str | None:
    """Start the command and send Ctrl-C at each moment in turn; what went wrong, if anything."""
    with dev_command() as dev:
        for moment in moments:
            at = dev.wait_for(moment.anchor)
            if at is None:
                # A later Ctrl-C whose anchor never came: the command has already exited.
                if dev.process.poll() is None or moment is moments[0]:
                    dev.kill()
                    return f"{name}: no line {moment.anchor!r}:\n{dev.output}"
                break
            time.sleep(max(0.0, at + moment.after - time.monotonic()))
            dev.ctrl_c()
        problems = dev.problems_stopping()
        if not problems:
            return None
        when = ", then ".join(map(str, moments))
        return (
            f"{name} (seed {SEED}, pid {dev.process.pid}), Ctrl-C {when}: {'; '.join(problems)}\n"
            f"{dev.output}"
        )


def _run_tries(tries: Mapping[str, Sequence[Moment]]) -> None:
    """Run the tries, a few at once; fail naming every try that did not stop cleanly."""
    with ThreadPoolExecutor(PARALLEL_TRIES) as pool:
        failures = [f for f in pool.map(_try, tries, tries.values()) if f is not None]
    assert not failures, "\n\n".join(failures)


@dataclass(frozen=True)
class StartUp:
    """How long each piece took to start, and the stack to stop, in one full start."""

    piece_seconds: dict[str, float]
    stop_seconds: float


@pytest.fixture(scope="module")
def start_up() -> StartUp:
    """One full start, measured, and stopped by Ctrl-C as soon as it is up."""
    with dev_command() as dev:
        up = dev.wait_for(RUNNING_LINE)
        assert up is not None, dev.output
        dev.ctrl_c()
        problems = dev.problems_stopping()
        assert not problems, f"Ctrl-C once up: {problems}\n{dev.output}"
    seen = [dev.seen(FIRST_LINE), *(dev.seen(_ready_line(piece)) for piece in PIECES)]
    times = [at for at in seen if at is not None]
    assert len(times) == len(PIECES) + 1, dev.output
    stopping, stopped = dev.seen(STOPPING_LINE), dev.seen("Stopped.")
    assert stopping is not None, dev.output
    assert stopped is not None, dev.output
    piece_seconds = {
        piece: end - begin for piece, begin, end in zip(PIECES, times, times[1:], strict=False)
    }
    return StartUp(piece_seconds, stopped - stopping)


def test_ctrl_c_stops_every_process_and_frees_every_port() -> None:
    """Ctrl-C once everything is up stops the stack in order: exit status 0, no traceback,
    nothing it started left running, and nothing listening on any of its seven ports."""
    with dev_command() as dev:
        assert dev.wait_for(RUNNING_LINE) is not None, dev.output
        printed = dev.output
        ports = dev.ports()
        assert len(ports) == len(PORT_SETTINGS), printed
        assert all(_listening(port) for port in ports)
        assert re.search(r"/#job=[0-9a-f-]{36}&get_job=http://127\.0\.0\.1:\d+&", printed)
        dev.ctrl_c()
        assert dev.problems_stopping() == [], dev.output


@pytest.mark.parametrize("piece", PIECES)
def test_ctrl_c_while_a_piece_starts_stops_what_was_started(start_up: StartUp, piece: str) -> None:
    """Ctrl-C at random moments while the piece starts stops what was started, and exits 0
    without starting the rest."""
    index = PIECES.index(piece)
    anchor = _ready_line(PIECES[index - 1]) if index else FIRST_LINE
    seconds = start_up.piece_seconds[piece]
    _run_tries(
        {
            f"{piece} try {attempt}": [
                Moment(anchor, _rng(f"start-up:{piece}", attempt).uniform(0, seconds))
            ]
            for attempt in range(TRIES_PER_PIECE)
        }
    )


def test_ctrl_c_while_running_stops_every_process() -> None:
    """Ctrl-C at random moments while everything runs (the scheduler's cycles, a training run)
    stops every process and frees every port."""
    _run_tries(
        {
            f"running try {attempt}": [Moment(RUNNING_LINE, _rng("running", attempt).uniform(0, 3))]
            for attempt in range(RUNNING_TRIES)
        }
    )


def test_a_second_ctrl_c_while_stopping_changes_nothing(start_up: StartUp) -> None:
    """A second Ctrl-C at a random moment of the shutdown neither hangs it nor leaves a process
    or a port behind."""
    tries = {}
    for attempt in range(SHUTDOWN_TRIES):
        rng = _rng("shutdown", attempt)
        first = Moment(RUNNING_LINE, rng.uniform(0, 1))
        tries[f"shutdown try {attempt}"] = [
            first,
            Moment(STOPPING_LINE, rng.uniform(0, start_up.stop_seconds)),
        ]
    _run_tries(tries)


def test_a_taken_port_is_refused_naming_its_setting() -> None:
    """A port that another program listens on stops the start at once, with the variable that
    chooses it in the message, before anything is started."""
    with socket.create_server(("127.0.0.1", 0)) as taken, dev_root() as root:
        port = taken.getsockname()[1]
        settings = DevSettings(
            pg_port=0,
            s3_port=0,
            cluster_port=0,
            processor_port=0,
            get_job_port=port,
            cancel_job_port=0,
            web_port=0,
            root=root,
        )
        with pytest.raises(PortInUse, match=rf"port {port} \(DEV_GET_JOB_PORT\)"):
            DevStack(settings).start()
        assert not (root / "pgdata").exists()


def test_a_malformed_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A setting that is not a number is refused with its name."""
    monkeypatch.setenv("DEV_WEB_PORT", "eighty")
    with pytest.raises(ConfigurationError, match="DEV_WEB_PORT"):
        load(DevSettings)
