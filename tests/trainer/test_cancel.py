"""SIGTERM (a cancel from the cluster) stops a run at a step boundary, after its checkpoint is
uploaded."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

from infra.local.s3 import demo_dataset_jsonl
from shared.training_events import (
    ADAPTER_FILES,
    CancelledEvent,
    CheckpointEvent,
    CompletedEvent,
    StepEvent,
    TrainingEvent,
    parse_event_line,
)
from tests.cluster.support import DatasetServer
from tests.trainer.support import (
    REPO_ROOT,
    Artifacts,
    TrainerRun,
    make_spec,
    trainer_command,
    trainer_env,
)
from trainer import EXIT_CANCELLED
from trainer.train import RunOptions, run


def test_sigterm_stops_at_a_step_boundary_uploads_the_checkpoint_and_exits_3(
    tiny_model: Path, datasets: DatasetServer, artifacts: Artifacts, tmp_path: Path
) -> None:
    """SIGTERM mid-run: no step after the one under way, a checkpoint of that step uploaded,
    then a cancelled event at that step, and exit code 3."""
    spec = make_spec(
        datasets.publish(demo_dataset_jsonl(64)),
        tiny_model,
        artifacts.targets,
        epochs=500,
        checkpoint_every_steps=None,
    )
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr_file:
        process = subprocess.Popen(
            trainer_command(spec),
            cwd=REPO_ROOT,
            env=trainer_env(),
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
        )
    stdout = process.stdout
    assert stdout is not None
    lines: list[str] = []
    events: list[TrainingEvent] = []
    deadline = time.monotonic() + 120
    try:
        for line in stdout:
            lines.append(line)
            event = parse_event_line(line)
            if event is None:
                continue
            events.append(event)
            if isinstance(event, StepEvent) and event.step == 3:
                process.send_signal(signal.SIGTERM)
                break
            assert time.monotonic() < deadline, "the run never reached step 3"
        rest, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    lines.extend(rest.splitlines())
    events.extend(e for e in (parse_event_line(line) for line in rest.splitlines()) if e)
    result = TrainerRun(process.returncode, events, "".join(lines), stderr_path.read_text())

    assert result.returncode == EXIT_CANCELLED, result.describe()
    steps = [event.step for event in result.steps]
    assert steps == list(range(1, len(steps) + 1))
    assert len(steps) < 10, "the run went on long after SIGTERM"
    cancelled = result.events[-1]
    assert isinstance(cancelled, CancelledEvent), result.describe()
    assert cancelled.step == steps[-1]
    checkpoints = result.of_type(CheckpointEvent)
    assert [(event.step, event.uploaded) for event in checkpoints] == [(steps[-1], True)]
    assert result.events.index(checkpoints[0]) == len(result.events) - 2
    assert not result.of_type(CompletedEvent)

    keys = artifacts.keys()
    assert {f"checkpoint/{name}" for name in ADAPTER_FILES} <= keys
    assert not any(key.startswith("adapter/") for key in keys)
    folder = artifacts.download("checkpoint/", tmp_path / "checkpoint")
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 8


def test_a_stop_before_the_first_step_cancels_at_step_0_without_a_checkpoint(
    tiny_model: Path, datasets: DatasetServer
) -> None:
    """A stop that arrives while the data and model load ends the run before training, as
    cancelled at step 0, with nothing to save."""
    from trainer.report import Reporter

    spec = make_spec(datasets.publish(demo_dataset_jsonl(16)), tiny_model)
    reporter = Reporter(stream=io.StringIO(), keep=True)
    stop = threading.Event()
    stop.set()
    code = run(spec, RunOptions(device="cpu"), reporter, stop)
    assert code == EXIT_CANCELLED
    assert [type(event) for event in reporter.events] == [CancelledEvent]
    assert isinstance(reporter.events[0], CancelledEvent)
    assert reporter.events[0].step == 0
