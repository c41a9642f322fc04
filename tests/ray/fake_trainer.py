"""A stand-in for ``python -m trainer`` in the Ray tests: it prints the trainer's event lines.

Run as ``python -m tests.ray.fake_trainer --spec <base64url TrainerSpec JSON>``, the command the
adapter builds. The spec is decoded and validated as the real trainer would; its
``hyperparameters["fake"]`` says how to behave:

- ``steps`` (10), ``step_seconds`` (0), ``start_seconds`` (0): the run's length and pace;
- ``noise_lines`` (0): other output printed before every step, as libraries do;
- ``hold_seconds`` (0): how long to stay running after the last step, caught up, before ending;
- ``ending``: ``completed`` (default), ``failed`` (a failed event, exit 1), ``silent`` (exit 0
  without an ending), ``crash`` (a traceback, exit 3), ``bad_event`` (an event line off the
  schema after the steps, then completed).

On SIGTERM (Ray's stop) it prints ``cancelled`` at the step it reached and exits 3, as the
trainer does.
"""

from __future__ import annotations

import argparse
import base64
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

from shared.training_events import (
    EVENT_PREFIX,
    CancelledEvent,
    CompletedEvent,
    FailedEvent,
    StartedEvent,
    StepEvent,
    TrainerSpec,
    encode_event,
)

STEPS_PER_EPOCH = 5


def _now() -> datetime:
    return datetime.now(UTC)


def _emit(event: Any) -> None:
    print(encode_event(event), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    spec = TrainerSpec.model_validate_json(base64.urlsafe_b64decode(args.spec))
    fake: dict[str, Any] = spec.hyperparameters.get("fake", {})
    steps = int(fake.get("steps", 10))
    step_seconds = float(fake.get("step_seconds", 0))
    noise = int(fake.get("noise_lines", 0))
    ending = str(fake.get("ending", "completed"))
    reached = 0

    def on_term(signum: int, frame: object) -> None:
        _emit(CancelledEvent(time=_now(), step=reached))
        sys.exit(3)

    signal.signal(signal.SIGTERM, on_term)
    print(f"fake trainer for job {spec.job_id}: loading {spec.dataset_url}", flush=True)
    time.sleep(float(fake.get("start_seconds", 0)))
    _emit(
        StartedEvent(
            time=_now(),
            total_steps=steps,
            total_epochs=max(1, -(-steps // STEPS_PER_EPOCH)),
            base_model="fake/tiny",
            trainable_parameters=1234,
            training_examples=steps * 8,
            validation_examples=8,
        )
    )
    for step in range(1, steps + 1):
        for n in range(noise):
            print(f"noise {step}.{n}: some library chatter about step {step}")
        _emit(
            StepEvent(
                time=_now(),
                step=step,
                epoch=(step - 1) // STEPS_PER_EPOCH,
                training_loss=2.0 / step,
                validation_loss=1.5 / step if step % STEPS_PER_EPOCH == 0 else None,
                learning_rate=1e-4,
                tokens_per_second=1000.0 + step,
            )
        )
        reached = step
        if step_seconds:
            time.sleep(step_seconds)
    time.sleep(float(fake.get("hold_seconds", 0)))
    if ending == "failed":
        _emit(FailedEvent(time=_now(), code="non_finite_loss", message="loss is NaN", step=reached))
        return 1
    if ending == "silent":
        return 0
    if ending == "crash":
        print("Traceback (most recent call last):\nRuntimeError: boom", file=sys.stderr)
        return 3
    if ending == "bad_event":
        print(EVENT_PREFIX + '{"v": 1, "type": "step", "step": "many"}', flush=True)
    artifact_uri = spec.artifacts.location + "adapter/" if spec.artifacts else None
    _emit(CompletedEvent(time=_now(), step=reached, artifact_uri=artifact_uri))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
