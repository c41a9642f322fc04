"""Each bundle stands alone: unpacked into an empty folder, given a fresh virtual environment that
installs nothing but its requirements.txt, and served by functions-framework as Cloud Functions
serves it, it answers correctly. Nothing of the repository is on its path.

The environments are installed in parallel, one per function.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from infra.bundle import build_bundle, function_names
from infra.local.processes import ServerProcess, listening_socket

# Enough configuration for every function to start; nothing it points at exists, because a
# refusal (401, 405) needs neither the database nor the cluster. Port 9 is discard: closed here.
HARMLESS_ENV = {
    "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
    "SUPABASE_URL": "http://127.0.0.1:9",
    "SUPABASE_SERVICE_ROLE_KEY": "service-role-key-not-used",
    "SUPABASE_ANON_KEY": "anon-key-not-used",
    "SUPABASE_JWT_SECRET": "jwt-secret-not-used-but-long-enough-for-hs256",
    "GPU_CLUSTER_API_URL": "http://127.0.0.1:9",
    "GPU_CLUSTER_API_KEY": "cluster-key-not-used",
    "CRON_SECRET": "cron-secret-not-used-but-long-enough-to-be-taken",
    "ALLOWED_ORIGINS": "http://localhost:3000",
    "STORAGE_BACKEND": "supabase",
}
A_JOB_ID = "00000000-0000-4000-8000-000000000000"
INSTALL_TIMEOUT = 240
STARTUP_TIMEOUT = 30


@dataclass(frozen=True)
class InstalledBundle:
    name: str
    app: Path
    venv: Path


def isolated_env(venv: Path) -> dict[str, str]:
    """This machine's environment (pip's index and cache settings included) without anything
    that would reach this repository or its virtualenv; PATH starts at the new environment."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.defpath}"
    return env


def install(name: str, root: Path) -> InstalledBundle:
    built = build_bundle(name, root / "zip")
    app, venv = root / "app", root / "venv"
    with zipfile.ZipFile(built.path) as archive:
        archive.extractall(app)
    env = isolated_env(venv)
    commands = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", "requirements.txt"],
    ]
    for command in commands:
        result = subprocess.run(
            command, cwd=app, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT
        )
        if result.returncode != 0:
            pytest.fail(f"{name}: {' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    return InstalledBundle(name, app, venv)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, InstalledBundle]:
    names = function_names()
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        futures = {
            name: pool.submit(install, name, tmp_path_factory.mktemp(name)) for name in names
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture
def served(
    request: pytest.FixtureRequest, installed: dict[str, InstalledBundle], tmp_path: Path
) -> Iterator[ServerProcess]:
    """The bundle's function served by its own functions-framework, from the unpacked folder."""
    bundle = installed[request.param]
    with listening_socket() as probe:
        port = probe.getsockname()[1]
    log = tmp_path / "function.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                str(bundle.venv / "bin" / "functions-framework"),
                "--target",
                bundle.name,
                "--source",
                str(bundle.app / "main.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=bundle.app,
            env={**isolated_env(bundle.venv), **HARMLESS_ENV},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    with ServerProcess(bundle.name, process, f"http://127.0.0.1:{port}") as server:
        wait_for_any_answer(server, log)
        yield server


def wait_for_any_answer(server: ServerProcess, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"{server.name} exited while starting:\n{log.read_text()}")
        try:
            httpx.get(server.base_url, timeout=1)
        except httpx.TransportError:
            time.sleep(0.1)
        else:
            return
    pytest.fail(f"{server.name} did not answer within {STARTUP_TIMEOUT} s:\n{log.read_text()}")


@pytest.mark.parametrize("served", function_names(), indirect=True)
def test_unpacked_bundle_serves_its_function(served: ServerProcess) -> None:
    """Served from nothing but its own files and requirements, each function refuses a caller
    without credentials (401) and a wrong method (405) in the API's JSON error shape."""
    statuses = []
    for method in ("GET", "POST"):
        response = httpx.request(method, f"{served.base_url}/{A_JOB_ID}", timeout=10)
        assert response.status_code in {401, 405}, (method, response.status_code, response.text)
        body = response.json()
        assert body["success"] is False
        assert body["error"]["code"] in {"unauthorized", "method_not_allowed"}
        statuses.append(response.status_code)
    assert 401 in statuses
