"""The training loop's arithmetic: the step plan, the learning-rate schedule, and the options
that change how a step is computed (accumulation, gradient checkpointing, bf16)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from infra.local.s3 import demo_dataset_jsonl
from shared.training_events import StartedEvent
from tests.cluster.support import DatasetServer
from tests.trainer.support import make_spec, run_in_process
from trainer.config import parse_hyperparameters
from trainer.train import Plan, learning_rate_factor


def test_the_plan_counts_optimizer_steps_over_accumulated_micro_batches() -> None:
    """Steps per epoch are micro-batches over the accumulation, rounded up; max_steps caps the
    run and with it the epochs; validation is twice an epoch unless told."""
    hp, _ = parse_hyperparameters({"batch_size": 4, "gradient_accumulation_steps": 3, "epochs": 2})
    plan = Plan.of(hp, training_examples=50)  # 13 micro-batches: 5 steps an epoch
    assert (plan.steps_per_epoch, plan.total_steps, plan.total_epochs) == (5, 10, 2)
    assert plan.eval_every == 2
    assert plan.warmup_steps == 1  # 5 % of 10, rounded up
    capped = Plan.of(parse_hyperparameters({"batch_size": 4, "max_steps": 7})[0], 50)
    assert (capped.total_steps, capped.total_epochs) == (7, 1)


@pytest.mark.parametrize("scheduler", ["cosine", "linear", "constant"])
def test_the_schedule_warms_up_linearly_then_decays_without_reaching_zero(
    scheduler: str,
) -> None:
    """The rate climbs to the peak over the warmup steps, then follows the schedule down (or
    stays, for constant); no training step gets a rate of 0."""
    plan = Plan(steps_per_epoch=10, total_steps=10, total_epochs=1, warmup_steps=2, eval_every=5)
    factors = [learning_rate_factor(plan, scheduler)(done) for done in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == 1.0
    assert all(f > 0 for f in factors)
    if scheduler == "constant":
        assert set(factors[1:]) == {1.0}
    else:
        assert factors[2:] == sorted(factors[2:], reverse=True)
        assert factors[-1] < 0.2
    if scheduler == "cosine":
        assert factors[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))


def test_accumulation_checkpointing_and_bf16_train_to_completion(
    tiny_model: Path, datasets: DatasetServer
) -> None:
    """gradient_accumulation_steps, gradient_checkpointing and bf16 autocast (here on the CPU)
    run the same loop to completion with finite losses and the planned step count."""
    spec = make_spec(
        datasets.publish(demo_dataset_jsonl(40)),
        tiny_model,
        epochs=2,
        batch_size=4,
        gradient_accumulation_steps=3,
        gradient_checkpointing=True,
        bf16=True,
        checkpoint_every_steps=None,
    )
    run = run_in_process(spec)
    assert run.returncode == 0, run.describe()
    started = run.of_type(StartedEvent)[0]
    # 36 training examples: 9 micro-batches, 3 steps an epoch.
    assert started.training_examples == 36
    assert started.total_steps == 6
    assert [step.step for step in run.steps] == [1, 2, 3, 4, 5, 6]
    assert [step.epoch for step in run.steps] == [1, 1, 1, 2, 2, 2]
    assert all(math.isfinite(step.training_loss) for step in run.steps)
    assert run.completion.validation_loss is not None


def test_hyperparameters_take_defaults_aliases_and_ignore_unknown_names() -> None:
    """Left-out settings take the documented defaults, lora_rank and eval_steps are read as
    lora_r and eval_every_steps, and unknown names are returned to be warned about (max_cost,
    the runner's, silently)."""
    hp, ignored = parse_hyperparameters(
        {"lora_rank": 4, "eval_steps": 9, "max_cost": 10.0, "flash": True}
    )
    assert (hp.lora_r, hp.eval_every_steps) == (4, 9)
    assert ignored == ["flash"]
    defaults, _ = parse_hyperparameters({})
    assert (defaults.epochs, defaults.batch_size, defaults.learning_rate) == (3, 8, 2e-4)
    assert (defaults.lora_r, defaults.lora_alpha, defaults.lora_dropout) == (16, 32, 0.05)
    assert (defaults.lr_scheduler, defaults.warmup_ratio) == ("cosine", 0.05)
    assert (defaults.checkpoint_every_steps, defaults.max_seq_length) == (100, 1024)
    assert defaults.max_dataset_bytes == 256 * 1024 * 1024
