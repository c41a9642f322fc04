"""Helpers for the trainer's tests: specs, running ``python -m trainer`` (as a subprocess where
the process matters, in-process where only its events and exit code do), and reading its
events."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from shared.training_events import (
    ADAPTER_FILES,
    ArtifactTargets,
    CompletedEvent,
    FailedEvent,
    StepEvent,
    TrainerSpec,
    TrainingEvent,
    parse_event_line,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Small and quick to learn on the tiny model: a few seconds of training on two cores.
FAST_HYPERPARAMETERS: dict[str, Any] = {
    "epochs": 3,
    "batch_size": 8,
    "learning_rate": 1e-2,
    "lora_rank": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "target_modules": "all-linear",
    "max_seq_length": 128,
    "warmup_steps": 2,
    "eval_every_steps": 4,
    "checkpoint_every_steps": 5,
    "seed": 7,
}


def make_spec(
    dataset_url: str,
    base_model: Path | str,
    artifacts: ArtifactTargets | None = None,
    **hyperparameters: Any,
) -> TrainerSpec:
    return TrainerSpec(
        job_id="job-under-test",
        dataset_url=dataset_url,
        hyperparameters={**FAST_HYPERPARAMETERS, "base_model": str(base_model), **hyperparameters},
        artifacts=artifacts,
    )


def spec_argument(spec: TrainerSpec) -> str:
    """``--spec``'s value: the spec's JSON, base64url without padding."""
    return base64.urlsafe_b64encode(spec.model_dump_json().encode()).decode().rstrip("=")


def trainer_command(spec: TrainerSpec, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "trainer",
        "--spec",
        spec_argument(spec),
        "--device",
        "cpu",
        "--retry-backoff",
        "0.05",
        *extra,
    ]


def trainer_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # One thread: on two busy cores, more OpenMP threads than cores wait on each other for
    # seconds a step.
    env["OMP_NUM_THREADS"] = "1"
    return env


@dataclass
class TrainerRun:
    returncode: int
    events: list[TrainingEvent]
    stdout: str
    stderr: str = ""

    @property
    def steps(self) -> list[StepEvent]:
        return [event for event in self.events if isinstance(event, StepEvent)]

    @property
    def failure(self) -> FailedEvent:
        failed = [event for event in self.events if isinstance(event, FailedEvent)]
        assert len(failed) == 1, self.describe()
        return failed[0]

    @property
    def completion(self) -> CompletedEvent:
        completed = [event for event in self.events if isinstance(event, CompletedEvent)]
        assert len(completed) == 1, self.describe()
        return completed[0]

    def of_type(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]

    def describe(self) -> str:
        return (
            f"exit {self.returncode}\n"
            f"stdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"
        )


def events_of(stdout: str) -> list[TrainingEvent]:
    """Every event on the output; a line that claims to be an event but is not fails the test
    (``parse_event_line`` raises)."""
    events = []
    for line in stdout.splitlines():
        event = parse_event_line(line)
        if event is not None:
            events.append(event)
    return events


def run_trainer(spec: TrainerSpec, *extra: str, timeout: float = 180) -> TrainerRun:
    """``python -m trainer`` as its own process, to its end."""
    done = subprocess.run(
        trainer_command(spec, *extra),
        cwd=REPO_ROOT,
        env=trainer_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return TrainerRun(done.returncode, events_of(done.stdout), done.stdout, done.stderr)


def run_in_process(spec: TrainerSpec | None, *args: str) -> TrainerRun:
    """The trainer's ``main`` in this process (quicker: torch is imported once); ``args``
    replace the spec's arguments when ``spec`` is None."""
    from trainer.__main__ import main
    from trainer.report import Reporter

    out = io.StringIO()
    argv = [*args] if spec is None else ["--spec", spec_argument(spec), "--device", "cpu", *args]
    if spec is not None and "--retry-backoff" not in args:
        argv += ["--retry-backoff", "0.05"]
    code = main(argv, Reporter(out))
    return TrainerRun(code, events_of(out.getvalue()), out.getvalue())


class PutServer:
    """A local HTTP server that answers every PUT with ``status`` and counts them."""

    def __init__(self, status: int) -> None:
        self.puts: list[str] = []
        puts = self.puts

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                puts.append(self.path)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def targets(self) -> ArtifactTargets:
        """Upload URLs for every adapter and checkpoint file, all to this server."""
        host, port = self._server.server_address[:2]
        return ArtifactTargets(
            location="s3://lora-artifacts/user/job/",
            upload_urls={
                f"{folder}{name}": f"http://{host!s}:{port}/{folder}{name}?signature=secret"
                for folder in ("checkpoint/", "adapter/")
                for name in ADAPTER_FILES
            },
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Artifacts:
    """A job's upload targets in the local S3, and where its files land there."""

    targets: ArtifactTargets
    bucket: str
    prefix: str
    client: Any = field(repr=False)

    def keys(self) -> set[str]:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix)
        return {item["Key"].removeprefix(self.prefix) for item in listed.get("Contents", [])}

    def download(self, folder: str, into: Path) -> Path:
        """The files under ``folder`` (``adapter/``), written into ``into``."""
        into.mkdir(parents=True, exist_ok=True)
        for name in self.keys():
            if name.startswith(folder):
                body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"]
                (into / name.removeprefix(folder)).write_bytes(body.read())
        return into
