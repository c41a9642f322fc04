"""A whole run of ``python -m trainer`` on the tiny model: its events, its learning, and the
adapter it uploads."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.local.s3 import demo_dataset_jsonl
from shared.training_events import (
    ADAPTER_FILES,
    CheckpointEvent,
    CompletedEvent,
    StartedEvent,
    StepEvent,
    TrainerSpec,
)
from tests.cluster.support import DatasetServer
from tests.trainer.conftest import new_artifacts
from tests.trainer.support import Artifacts, TrainerRun, make_spec, run_trainer

DATASET = demo_dataset_jsonl(64)


@dataclass
class CompletedRun:
    spec: TrainerSpec
    run: TrainerRun
    artifacts: Artifacts


@pytest.fixture(scope="module")
def completed(tiny_model: Path, datasets: DatasetServer, s3: Any) -> CompletedRun:
    """One run to its end, with uploads, shared by the tests of this module."""
    artifacts = new_artifacts(s3)
    spec = make_spec(datasets.publish(DATASET), tiny_model, artifacts.targets)
    run = run_trainer(spec)
    assert run.returncode == 0, run.describe()
    return CompletedRun(spec, run, artifacts)


def test_every_event_line_is_on_the_schema_with_one_step_event_per_step(
    completed: CompletedRun,
) -> None:
    """Each event line parses against the shared schema; the run starts, steps 1..N once each
    in order, and completes at N."""
    run = completed.run
    event_lines = [line for line in run.stdout.splitlines() if line.startswith("LORA_EVENT ")]
    assert len(event_lines) == len(run.events)
    started = run.events[0]
    assert isinstance(started, StartedEvent)
    assert isinstance(run.events[-1], CompletedEvent)
    assert [step.step for step in run.steps] == list(range(1, started.total_steps + 1))
    assert run.completion.step == started.total_steps
    assert started.training_examples + started.validation_examples == 64
    assert started.validation_examples >= 1
    assert started.trainable_parameters > 0
    times = [event.time for event in run.events]
    assert times == sorted(times)


def test_step_events_carry_the_figures_and_no_made_up_gpu_numbers(
    completed: CompletedRun,
) -> None:
    """Step events carry a finite loss, the learning rate, tokens/s and epoch; on a CPU the GPU
    figures are None, not 0."""
    steps = completed.run.steps
    for step in steps:
        assert math.isfinite(step.training_loss)
        assert step.tokens_per_second > 0
        assert step.learning_rate > 0
        assert step.gpu_utilization is None
        assert step.gpu_memory_gb is None
    started = completed.run.of_type(StartedEvent)[0]
    assert [step.epoch for step in steps][-1] == started.total_epochs
    # Warmup over 2 steps, then decay: the peak is reached at step 2.
    rates = [step.learning_rate for step in steps]
    assert rates[0] < rates[1]
    assert rates[1] == pytest.approx(1e-2)
    assert rates[2:] == sorted(rates[2:], reverse=True)


def test_validation_loss_is_reported_every_n_steps_and_at_each_epochs_end(
    completed: CompletedRun,
) -> None:
    """The validation loss is on the steps that are multiples of eval_every_steps and on each
    epoch's last step, and only there."""
    steps = completed.run.steps
    last_of_epoch = {
        step.step
        for step, following in zip(steps, [*steps[1:], None], strict=True)
        if following is None or following.epoch != step.epoch
    }
    evaluated = {step.step for step in steps if step.validation_loss is not None}
    assert evaluated == {step.step for step in steps if step.step % 4 == 0} | last_of_epoch
    assert completed.run.completion.validation_loss == steps[-1].validation_loss


def test_validation_loss_falls_over_training(completed: CompletedRun) -> None:
    """Training lowers the validation loss: each epoch's end is below the one before, and the
    last is well below the first measured."""
    steps = completed.run.steps
    losses = [step.validation_loss for step in steps if step.validation_loss is not None]
    epoch_ends = [
        step.validation_loss
        for step, following in zip(steps, [*steps[1:], None], strict=True)
        if following is None or following.epoch != step.epoch
    ]
    assert epoch_ends == sorted(epoch_ends, reverse=True), epoch_ends
    assert losses[-1] < losses[0] - 0.2, losses


def test_checkpoints_every_n_steps_arrive_in_storage(completed: CompletedRun) -> None:
    """A checkpoint is saved and uploaded every checkpoint_every_steps (not at the last step,
    where the adapter itself is saved), and the checkpoint's files are in S3."""
    total = completed.run.completion.step
    checkpoints = completed.run.of_type(CheckpointEvent)
    assert [event.step for event in checkpoints] == list(range(5, total, 5))
    assert all(event.uploaded for event in checkpoints)
    assert {f"checkpoint/{name}" for name in ADAPTER_FILES} <= completed.artifacts.keys()


def test_the_final_adapter_is_uploaded_and_its_location_reported(
    completed: CompletedRun, tmp_path: Path
) -> None:
    """The adapter's files arrive through the presigned PUT URLs, the completed event names
    where, and the stored config is the run's LoRA config."""
    artifacts = completed.artifacts
    assert {f"adapter/{name}" for name in ADAPTER_FILES} <= artifacts.keys()
    assert completed.run.completion.artifact_uri == artifacts.targets.location + "adapter/"
    folder = artifacts.download("adapter/", tmp_path / "adapter")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 8
    assert config["lora_alpha"] == 16
    assert config["peft_type"] == "LORA"


def test_the_uploaded_adapter_reloads_and_reproduces_the_reported_validation_loss(
    completed: CompletedRun, tiny_model: Path, tmp_path: Path
) -> None:
    """The adapter downloaded from S3, loaded with PeftModel.from_pretrained on the base model,
    gives the final validation loss the run reported, by the same computation."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainer.config import parse_hyperparameters
    from trainer.model import load_tokenizer, pad_token_id, quiet_peft
    from trainer.train import evaluate, prepare_data, validation_batches

    folder = completed.artifacts.download("adapter/", tmp_path / "adapter")
    hp, _ = parse_hyperparameters(completed.spec.hyperparameters)
    tokenizer = load_tokenizer(str(tiny_model))
    data = prepare_data(tokenizer, DATASET, hp)
    batches = validation_batches(data.validation, hp.batch_size, pad_token_id(tokenizer))
    device = torch.device("cpu")
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    base_loss = evaluate(base, batches, device)
    with quiet_peft():
        model = PeftModel.from_pretrained(base, folder)
    reloaded_loss = evaluate(model, batches, device)

    reported = completed.run.completion.validation_loss
    assert reported is not None
    assert reloaded_loss == pytest.approx(reported, rel=1e-5)
    assert base_loss is not None
    assert reported < base_loss - 0.2


def test_a_run_without_upload_targets_completes_without_an_artifact_uri(
    tiny_model: Path, datasets: DatasetServer
) -> None:
    """With no artifacts in the spec, the run still trains and checkpoints, uploads nothing,
    and reports no artifact_uri."""
    from tests.trainer.support import run_in_process

    spec = make_spec(
        datasets.publish(DATASET), tiny_model, epochs=1, checkpoint_every_steps=3, max_steps=4
    )
    run = run_in_process(spec)
    assert run.returncode == 0, run.describe()
    assert [event.step for event in run.of_type(CheckpointEvent)] == [3]
    assert not any(event.uploaded for event in run.of_type(CheckpointEvent))
    assert run.completion.artifact_uri is None
    assert [step.step for step in run.of_type(StepEvent)] == [1, 2, 3, 4]
