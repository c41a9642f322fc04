"""`python -m infra.local.dev`, the command `make dev` runs: its settings, its ports, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
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


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_ctrl_c_stops_every_process_and_frees_every_port() -> None:
    """Ctrl-C, sent as a terminal sends it to the whole foreground group, stops the stack in
    order: exit status 0, no traceback, and nothing listens on any of its ports afterwards."""
    with dev_root() as root:
        env = {
            **os.environ,
            **dict.fromkeys(PORT_SETTINGS, "0"),
            "DEV_ROOT": str(root),
            "DEV_STEPS_PER_SECOND": "20",
            "DEV_SCHEDULER_INTERVAL_SECONDS": "0.5",
        }
        # A session of its own stands for the terminal's process group.
        dev = subprocess.Popen(
            [sys.executable, "-m", "infra.local.dev"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert dev.stdout is not None
        started = []
        for line in dev.stdout:
            started.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        printed = "".join(started)
        assert "Press Ctrl-C" in printed, printed
        ports = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", printed)}
        assert len(ports) == len(PORT_SETTINGS), printed
        assert all(_listening(port) for port in ports)
        assert re.search(r"/#job=[0-9a-f-]{36}&get_job=http://127\.0\.0\.1:\d+&", printed)

        os.killpg(dev.pid, signal.SIGINT)
        rest, _ = dev.communicate(timeout=60)

    assert dev.returncode == 0, rest
    assert rest.rstrip().endswith("Stopped."), rest
    assert "Traceback" not in rest
    assert [port for port in ports if _listening(port)] == []


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
