"""The numbers of a simulated LoRA training run: step counts derived from the dataset, and metric
curves that look like a real run's.

Every point is a pure function of the run's seed and its step, so a run's history reads the same
however often and whenever it is polled.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


class InvalidTrainingRequest(ValueError):
    """The hyperparameters or GPU configuration of a submission cannot be trained with."""


class InvalidDataset(ValueError):
    """The downloaded dataset holds no usable training pairs."""


@dataclass(frozen=True)
class GpuProfile:
    """What one GPU of a kind delivers for a 7B-parameter LoRA run."""

    tokens_per_second: float
    memory_gb: float


# Rough LoRA fine-tuning figures; the point is plausible curves and relative speeds.
_GPU_PROFILES = {
    "h200": GpuProfile(tokens_per_second=6200, memory_gb=141),
    "h100": GpuProfile(tokens_per_second=5200, memory_gb=80),
    "a100": GpuProfile(tokens_per_second=3100, memory_gb=80),
    "l40s": GpuProfile(tokens_per_second=2500, memory_gb=48),
    "a10g": GpuProfile(tokens_per_second=1150, memory_gb=24),
    "a10": GpuProfile(tokens_per_second=1100, memory_gb=24),
    "l4": GpuProfile(tokens_per_second=900, memory_gb=24),
    "v100": GpuProfile(tokens_per_second=950, memory_gb=32),
    "t4": GpuProfile(tokens_per_second=420, memory_gb=16),
}
_UNKNOWN_GPU = GpuProfile(tokens_per_second=1500, memory_gb=40)
_MEMORY_SUFFIX = re.compile(r"(\d+)\s*gb?$")
# The contract's bound: a run asks for 1 to 64 GPUs.
MAX_GPU_COUNT = 64
_SCHEDULERS = ("cosine", "linear", "constant")


def gpu_profile(gpu_type: str) -> GpuProfile:
    """The profile for a GPU name such as ``A100``, ``nvidia-a100-40gb`` or ``H100 80GB``.

    Unknown names get a middling profile rather than a refusal: the runner's price table, not the
    simulator, decides which GPUs exist.
    """
    name = gpu_type.lower().replace("nvidia", "").strip(" -_")
    # Longest name first, so that "a100" is not read as "a10" nor "l40s" as "l4".
    key = next(
        (k for k in sorted(_GPU_PROFILES, key=len, reverse=True) if name.startswith(k)), None
    )
    profile = _GPU_PROFILES[key] if key else _UNKNOWN_GPU
    memory = _MEMORY_SUFFIX.search(name)
    if memory:
        return GpuProfile(profile.tokens_per_second, float(memory.group(1)))
    return profile


@dataclass(frozen=True)
class TrainingSettings:
    """The parts of a submission that shape the run, checked when it is submitted."""

    batch_size: int
    epochs: int
    learning_rate: float
    warmup_ratio: float
    scheduler: str
    eval_steps: int | None
    gpu_type: str
    gpu_count: int

    @classmethod
    def from_submission(
        cls, hyperparameters: dict[str, Any], gpu_type: str, gpu_count: int
    ) -> TrainingSettings:
        """Read the hyperparameters, with the usual LoRA defaults for those left out."""
        if not 1 <= gpu_count <= MAX_GPU_COUNT:
            raise InvalidTrainingRequest(f"gpu_count must be between 1 and {MAX_GPU_COUNT}")
        scheduler = hyperparameters.get("lr_scheduler", "cosine")
        if scheduler not in _SCHEDULERS:
            raise InvalidTrainingRequest(f"lr_scheduler must be one of {', '.join(_SCHEDULERS)}")
        eval_steps = hyperparameters.get("eval_steps")
        return cls(
            batch_size=int(_number(hyperparameters, "batch_size", 8, whole=True)),
            epochs=int(_number(hyperparameters, "epochs", 3, whole=True)),
            learning_rate=_number(hyperparameters, "learning_rate", 2e-4),
            warmup_ratio=min(0.5, _number(hyperparameters, "warmup_ratio", 0.05, allow_zero=True)),
            scheduler=scheduler,
            eval_steps=None
            if eval_steps is None
            else int(_number(hyperparameters, "eval_steps", 1, whole=True)),
            gpu_type=gpu_type,
            gpu_count=gpu_count,
        )

    def plan(self, training_pairs: int, seed: int) -> TrainingPlan:
        """Fix the run's step counts and curves once the dataset's size is known."""
        steps_per_epoch = math.ceil(training_pairs / self.batch_size)
        total_steps = steps_per_epoch * self.epochs
        return TrainingPlan(
            settings=self,
            training_pairs=training_pairs,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            warmup_steps=math.ceil(total_steps * self.warmup_ratio),
            # Evaluate twice an epoch unless told otherwise, as trainers commonly do.
            eval_steps=self.eval_steps or max(1, steps_per_epoch // 2),
            gpu=gpu_profile(self.gpu_type),
            curve=_LossCurve.from_seed(seed, total_steps),
            seed=seed,
        )


def _number(
    hyperparameters: dict[str, Any],
    name: str,
    default: float,
    *,
    whole: bool = False,
    allow_zero: bool = False,
) -> float:
    value = hyperparameters.get(name, default)
    # bool is an int in Python, but `"epochs": true` is a mistake, not one epoch.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidTrainingRequest(f"{name} must be a number")
    if whole and value != int(value):
        raise InvalidTrainingRequest(f"{name} must be a whole number")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidTrainingRequest(
            f"{name} must be {'non-negative' if allow_zero else 'positive'}"
        )
    return float(value)


@dataclass(frozen=True)
class _LossCurve:
    """An exponentially decaying loss with a per-run start, floor and speed."""

    initial: float
    floor: float
    decay_steps: float

    @classmethod
    def from_seed(cls, seed: int, total_steps: int) -> _LossCurve:
        rng = random.Random(seed)  # noqa: S311 - simulated metrics, not security
        return cls(
            initial=2.0 + 0.8 * rng.random(),
            floor=0.35 + 0.25 * rng.random(),
            decay_steps=max(1.0, total_steps * (0.15 + 0.1 * rng.random())),
        )

    def at(self, step: int) -> float:
        return self.floor + (self.initial - self.floor) * math.exp(-step / self.decay_steps)


@dataclass(frozen=True)
class TrainingPlan:
    """A run whose dataset has been read: everything needed to produce any of its points."""

    settings: TrainingSettings
    training_pairs: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_steps: int
    gpu: GpuProfile
    curve: _LossCurve
    seed: int

    def epoch_of(self, step: int) -> int:
        """The 1-based epoch a step belongs to (0 before the first step)."""
        return math.ceil(step / self.steps_per_epoch) if step > 0 else 0

    def learning_rate(self, step: int) -> float:
        """Linear warmup to the configured rate, then the configured decay."""
        peak = self.settings.learning_rate
        if step <= self.warmup_steps:
            return peak * step / max(1, self.warmup_steps)
        done = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        if self.settings.scheduler == "cosine":
            return peak * 0.5 * (1 + math.cos(math.pi * done))
        if self.settings.scheduler == "linear":
            return peak * (1 - done)
        return peak

    def point(self, step: int, recorded_at: datetime) -> dict[str, Any]:
        """The metrics of one step, in the contract's JSON shape."""
        rng = random.Random(f"{self.seed}:{step}")  # noqa: S311 - simulated metrics
        trend = self.curve.at(step)
        epoch = self.epoch_of(step)
        evaluated = step % self.eval_steps == 0 or step == self.total_steps
        # Validation loss sits a little above training loss and drifts up with each epoch,
        # the mild overfitting a small LoRA dataset shows.
        validation = trend * (1.04 + 0.03 * (epoch - 1)) + rng.gauss(0, 0.01 * trend)
        gpus = self.settings.gpu_count
        # Data parallelism scales sublinearly: about 8 % is lost each time the GPUs double.
        scaling = gpus * 0.92 ** math.log2(gpus)
        batch_pressure = min(1.0, self.settings.batch_size / 32)
        memory = self.gpu.memory_gb * (0.55 + 0.3 * batch_pressure) + rng.gauss(0, 0.2)
        return {
            "epoch": epoch,
            "step": step,
            "training_loss": round(max(0.01, trend + rng.gauss(0, 0.04 * trend)), 4),
            "validation_loss": round(max(0.01, validation), 4) if evaluated else None,
            "learning_rate": float(f"{self.learning_rate(step):.6g}"),
            "throughput": round(self.gpu.tokens_per_second * scaling * (1 + rng.gauss(0, 0.04)), 1),
            "gpu_utilization": round(min(99.0, max(80.0, rng.gauss(93, 3))), 1),
            "gpu_memory": round(min(self.gpu.memory_gb, max(0.0, memory)), 2),
            "recorded_at": recorded_at.isoformat(),
        }


def step_time(started: datetime, step: int, steps_per_second: float) -> datetime:
    """When a step finished, for a run that started running at ``started``."""
    return started + timedelta(seconds=step / steps_per_second)


def count_training_pairs(content: bytes) -> int:
    """How many training pairs a dataset file holds: JSONL, one pair a line, or a JSON array."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidDataset("the dataset is not UTF-8 text") from exc
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            records = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidDataset(f"the dataset is not a valid JSON array: {exc}") from exc
        pairs = len(records)
    else:
        pairs = 0
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidDataset(f"line {number} of the dataset is not JSON: {exc}") from exc
            pairs += 1
    if pairs == 0:
        raise InvalidDataset("the dataset holds no training pairs")
    return pairs
