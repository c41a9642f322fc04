"""One training run, start to end: the spec in, events out, the adapter uploaded.

The loop is the trainer's own (not transformers' Trainer) so that every event, a cancel and the
uploads happen where the run decides:

* an optimizer step is ``gradient_accumulation_steps`` micro-batches of ``batch_size`` examples;
  the loss is the mean over the step's answer tokens (each token counts once, however the
  examples fall into micro-batches), and the one host sync a step is reading that loss for its
  event;
* AdamW on the LoRA weights, linear warmup then a cosine, linear or constant schedule,
  gradients clipped to ``max_grad_norm``;
* the validation loss (the same token mean, over the fixed validation split) every
  ``eval_every_steps`` and at each epoch's end, on that step's event;
* a checkpoint every ``checkpoint_every_steps``, uploaded on a thread of its own while training
  goes on; its ``checkpoint`` event is printed when it has arrived;
* a NaN or infinite loss fails the run (``non_finite_loss``);
* a stop request (SIGTERM) is honoured at the next step boundary: the checkpoint is saved and
  uploaded, then ``cancelled`` is printed.
"""

from __future__ import annotations

import math
import random
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.training_events import (
    ADAPTER_DIR,
    CHECKPOINT_DIR,
    CancelledEvent,
    CheckpointEvent,
    CompletedEvent,
    FailedEvent,
    StartedEvent,
    StepEvent,
    TrainerSpec,
)
from trainer import EXIT_CANCELLED, EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE
from trainer.config import Hyperparameters, parse_hyperparameters
from trainer.data import (
    Batch,
    collate,
    download_dataset,
    micro_batches,
    parse_dataset,
    split,
    tokenize_all,
)
from trainer.errors import (
    DATASET_INVALID,
    INTERNAL,
    INVALID_HYPERPARAMETERS,
    NON_FINITE_LOSS,
    Cancelled,
    SpecError,
    TrainerError,
)
from trainer.report import Reporter, now, warn
from trainer.upload import BackgroundUploads, Uploader, UploadPolicy


@dataclass(frozen=True)
class RunOptions:
    """How this machine runs the spec (the command line's flags)."""

    device: str | None = None
    """"cpu", "cuda", "cuda:1"; None: the first GPU where there is one, else the CPU."""
    work_dir: Path | None = None
    """Where checkpoints and the adapter are saved; None: a temporary folder, removed at the
    end."""
    base_model: str | None = None
    """The base model when the hyperparameters name none."""
    max_dataset_bytes: int | None = None
    """Overrides the ``max_dataset_bytes`` hyperparameter."""
    upload_policy: UploadPolicy = field(default_factory=UploadPolicy)
    download_backoff_seconds: float = 1.0


def run(
    spec: TrainerSpec,
    options: RunOptions,
    reporter: Reporter,
    stop: threading.Event,
) -> int:
    """Train ``spec``; print its events through ``reporter``; return the exit code.

    ``stop`` set (by the SIGTERM handler) cancels the run at the next step boundary."""
    state = _RunState()
    try:
        _Run(spec, options, reporter, stop, state).execute()
    except Cancelled:
        reporter.emit(CancelledEvent(time=now(), step=state.step))
        return EXIT_CANCELLED
    except _CancelledAtStep:
        return EXIT_CANCELLED
    except SpecError as exc:
        reporter.emit(FailedEvent(time=now(), code=exc.code, message=exc.message))
        return EXIT_USAGE
    except TrainerError as exc:
        step = exc.step if exc.step is not None else state.step
        reporter.emit(FailedEvent(time=now(), code=exc.code, message=exc.message, step=step))
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001  (whatever broke, the log must say the run failed)
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}".strip()[:2000]
        reporter.emit(FailedEvent(time=now(), code=INTERNAL, message=message, step=state.step))
        return EXIT_FAILED
    return EXIT_COMPLETED


class _CancelledAtStep(Exception):
    """The cancel has been reported; the run ends with exit code 3."""


@dataclass
class _RunState:
    step: int = 0


@dataclass(frozen=True)
class Plan:
    """The step counts of a run, fixed once the data is known."""

    steps_per_epoch: int
    total_steps: int
    total_epochs: int
    warmup_steps: int
    eval_every: int

    @classmethod
    def of(cls, hp: Hyperparameters, training_examples: int) -> Plan:
        micro_per_epoch = math.ceil(training_examples / hp.batch_size)
        steps_per_epoch = math.ceil(micro_per_epoch / hp.gradient_accumulation_steps)
        total = steps_per_epoch * hp.epochs
        if hp.max_steps is not None:
            total = min(total, hp.max_steps)
        warmup = (
            hp.warmup_steps if hp.warmup_steps is not None else math.ceil(total * hp.warmup_ratio)
        )
        return cls(
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            total_epochs=math.ceil(total / steps_per_epoch),
            warmup_steps=min(warmup, total),
            # Twice an epoch unless told otherwise, as the cluster simulator does.
            eval_every=hp.eval_every_steps or max(1, steps_per_epoch // 2),
        )


def learning_rate_factor(plan: Plan, scheduler: str) -> Callable[[int], float]:
    """The factor of the peak learning rate for the step that follows ``done`` steps (what
    ``LambdaLR`` asks): linear warmup over ``warmup_steps``, then the schedule's decay, which
    never reaches 0 on a step that trains."""

    def factor(done: int) -> float:
        step = done + 1
        if step <= plan.warmup_steps:
            return step / plan.warmup_steps
        if scheduler == "constant":
            return 1.0
        decayed = (step - plan.warmup_steps - 1) / max(1, plan.total_steps - plan.warmup_steps)
        if scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * decayed))
        return 1.0 - decayed

    return factor


@dataclass(frozen=True)
class PreparedData:
    training: list[Any]
    validation: list[Any]
    dropped: int


def prepare_data(tokenizer: Any, data: bytes, hp: Hyperparameters) -> PreparedData:
    """Check, tokenize and split a dataset exactly as a run does (tests and the bench rebuild a
    run's validation set with it)."""
    examples = parse_dataset(data)
    tokenized, dropped = tokenize_all(tokenizer, examples, hp.max_seq_length)
    if not tokenized:
        raise TrainerError(
            DATASET_INVALID,
            f"none of the {len(examples)} examples keeps an answer token within "
            f"max_seq_length {hp.max_seq_length}",
        )
    training, validation = split(
        tokenized,
        fraction=hp.validation_split,
        max_validation=hp.max_validation_examples,
        seed=hp.seed,
    )
    return PreparedData(training, validation, dropped)


def validation_batches(
    validation: Sequence[Any], batch_size: int, pad_token_id: int
) -> list[Batch]:
    return [
        collate(batch, pad_token_id)
        for batch in micro_batches(validation, batch_size, shuffle_seed=None)
    ]


def loss_sum(model: Any, batch: Batch, device: Any, autocast: Any) -> Any:
    """The summed cross-entropy of a batch's answer tokens (a 0-d tensor on ``device``); the
    logits are cast to fp32 for it."""
    import torch

    input_ids = batch.input_ids.to(device, non_blocking=True)
    attention_mask = batch.attention_mask.to(device, non_blocking=True)
    labels = batch.labels.to(device, non_blocking=True)
    context = (
        torch.autocast(device_type=device.type, dtype=autocast)
        if autocast is not None
        else nullcontext()
    )
    with context:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    # Each position predicts the next token: shift the labels (not the logits, which would copy
    # the largest tensor of the step).
    targets = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    return torch.nn.functional.cross_entropy(
        logits.float().view(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )


def evaluate(
    model: Any,
    batches: Sequence[Batch],
    device: Any,
    autocast: Any = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> float | None:
    """The validation loss: the mean cross-entropy over every answer token of ``batches``, with
    dropout off. None when ``should_stop`` interrupted it."""
    import torch

    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = sum(batch.predicted_tokens for batch in batches)
    try:
        with torch.no_grad():
            for batch in batches:
                if should_stop():
                    return None
                total += loss_sum(model, batch, device, autocast).double()
    finally:
        model.train(was_training)
    return float(total.item()) / max(1, count)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


class _Run:
    def __init__(
        self,
        spec: TrainerSpec,
        options: RunOptions,
        reporter: Reporter,
        stop: threading.Event,
        state: _RunState,
    ) -> None:
        self.spec = spec
        self.options = options
        self.reporter = reporter
        self.stop = stop
        self.state = state

    def execute(self) -> None:
        hp, ignored = parse_hyperparameters(self.spec.hyperparameters)
        if ignored:
            warn(f"hyperparameters this trainer does not use, ignored: {', '.join(ignored)}")
        base_model = hp.base_model or self.options.base_model
        if not base_model:
            raise SpecError(
                INVALID_HYPERPARAMETERS,
                "no base model: the hyperparameters name none (base_model) and no default was "
                "given (--base-model)",
            )
        max_bytes = self.options.max_dataset_bytes or hp.max_dataset_bytes
        data = download_dataset(
            self.spec.dataset_url,
            max_bytes=max_bytes,
            should_stop=self.stop.is_set,
            backoff_seconds=self.options.download_backoff_seconds,
        )
        parse_dataset(data)  # a bad dataset is refused before the model is loaded

        from trainer import model as models

        tokenizer = models.load_tokenizer(base_model)
        prepared = prepare_data(tokenizer, data, hp)
        if prepared.dropped:
            warn(
                f"{prepared.dropped} examples have no answer token within max_seq_length "
                f"{hp.max_seq_length} and are left out"
            )
        if self.stop.is_set():
            raise Cancelled
        device = models.choose_device(self.options.device)
        precision = models.choose_precision(device, hp.bf16)
        seed_everything(hp.seed)
        model = models.apply_lora(models.load_model(base_model, device, precision), hp)
        if self.stop.is_set():
            raise Cancelled

        work_dir = self.options.work_dir
        temporary = work_dir is None
        work = Path(tempfile.mkdtemp(prefix="lora-trainer-")) if work_dir is None else work_dir
        work.mkdir(parents=True, exist_ok=True)
        uploader = Uploader(self.spec.artifacts, self.options.upload_policy)
        try:
            _Loop(
                hp=hp,
                base_model=base_model,
                model=model,
                pad_token_id=models.pad_token_id(tokenizer),
                data=prepared,
                device=device,
                autocast=precision.autocast,
                trainable=models.trainable_parameters(model),
                uploader=uploader,
                work=work,
                run=self,
            ).train()
        finally:
            uploader.close()
            if temporary:
                shutil.rmtree(work, ignore_errors=True)


class _Loop:
    def __init__(
        self,
        *,
        hp: Hyperparameters,
        base_model: str,
        model: Any,
        pad_token_id: int,
        data: PreparedData,
        device: Any,
        autocast: Any,
        trainable: list[Any],
        uploader: Uploader,
        work: Path,
        run: _Run,
    ) -> None:
        self.hp = hp
        self.base_model = base_model
        self.model = model
        self.pad = pad_token_id
        self.data = data
        self.device = device
        self.autocast = autocast
        self.trainable = trainable
        self.uploader = uploader
        self.work = work
        self.run = run
        self.reporter = run.reporter
        self.stop = run.stop
        self.plan = Plan.of(hp, len(data.training))
        self.validation = validation_batches(data.validation, hp.batch_size, self.pad)
        self.uploads = BackgroundUploads(uploader)
        self.last_checkpoint: int | None = None

    @property
    def step(self) -> int:
        return self.run.state.step

    def train(self) -> None:
        try:
            self._train()
        except TrainerError as exc:
            if exc.step is None:
                exc.step = self.step
            raise
        finally:
            self.uploads.close()

    def _train(self) -> None:
        import torch

        from trainer.gpu import GpuMonitor

        hp, plan, model = self.hp, self.plan, self.model
        optimizer = torch.optim.AdamW(
            self.trainable,
            lr=hp.learning_rate,
            weight_decay=hp.weight_decay,
            fused=self.device.type == "cuda",
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, learning_rate_factor(plan, hp.lr_scheduler)
        )
        gpu = GpuMonitor(self.device)
        self.reporter.emit(
            StartedEvent(
                time=now(),
                total_steps=plan.total_steps,
                total_epochs=plan.total_epochs,
                base_model=self.base_model,
                trainable_parameters=sum(p.numel() for p in self.trainable),
                training_examples=len(self.data.training),
                validation_examples=len(self.data.validation),
            )
        )
        model.train()
        validation_loss: float | None = None
        try:
            for epoch in range(1, plan.total_epochs + 1):
                batches = micro_batches(
                    self.data.training, hp.batch_size, shuffle_seed=hp.seed + epoch
                )
                groups = [
                    batches[i : i + hp.gradient_accumulation_steps]
                    for i in range(0, len(batches), hp.gradient_accumulation_steps)
                ]
                for index, group in enumerate(groups):
                    started = time.perf_counter()
                    collated = [collate(batch, self.pad) for batch in group]
                    predicted = sum(batch.predicted_tokens for batch in collated)
                    tokens = sum(batch.tokens for batch in collated)
                    learning_rate = float(scheduler.get_last_lr()[0])
                    step_loss = torch.zeros((), device=self.device)
                    for batch in collated:
                        loss = loss_sum(model, batch, self.device, self.autocast) / predicted
                        loss.backward()
                        step_loss += loss.detach()
                    if hp.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(self.trainable, hp.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    training_loss = float(step_loss.item())  # the step's one host sync
                    elapsed = time.perf_counter() - started
                    self.run.state.step += 1
                    step = self.step
                    if not math.isfinite(training_loss):
                        raise _non_finite("training", training_loss, step)

                    last_of_epoch = index == len(groups) - 1 or step == plan.total_steps
                    if step % plan.eval_every == 0 or last_of_epoch:
                        validation_loss = evaluate(
                            model, self.validation, self.device, self.autocast, self.stop.is_set
                        )
                        if validation_loss is not None and not math.isfinite(validation_loss):
                            raise _non_finite("validation", validation_loss, step)
                        reported = validation_loss
                    else:
                        reported = None
                    sample = gpu.sample()
                    self.reporter.emit(
                        StepEvent(
                            time=now(),
                            step=step,
                            epoch=epoch,
                            training_loss=training_loss,
                            validation_loss=reported,
                            learning_rate=learning_rate,
                            tokens_per_second=tokens / elapsed if elapsed > 0 else 0.0,
                            gpu_utilization=sample.utilization,
                            gpu_memory_gb=sample.memory_gb,
                        )
                    )
                    self._report_uploads(self.uploads.finished())
                    if self.stop.is_set():
                        self._cancel()
                    if step == plan.total_steps:
                        break
                    every = hp.checkpoint_every_steps
                    if every is not None and step % every == 0:
                        self._checkpoint(background=True)
                if self.step == plan.total_steps:
                    break
        finally:
            gpu.close()
        self._complete(validation_loss)

    # --- saving and uploading ---------------------------------------------------------------

    def _save(self, name: str) -> Path:
        from trainer.model import quiet_peft

        folder = self.work / name
        folder.mkdir(parents=True, exist_ok=True)
        card = folder / "README.md"
        if not card.exists():
            # peft writes a model card beside the adapter; from its template that takes ~50 ms
            # (a jinja compile) a save, while updating one already there takes ~1 ms.
            card.write_text("---\nlibrary_name: peft\n---\n")
        with quiet_peft():
            self.model.save_pretrained(folder, safe_serialization=True)
        return folder

    def _checkpoint(self, *, background: bool) -> None:
        step = self.step
        folder = self._save(f"checkpoint-{step}")
        self.last_checkpoint = step
        if background and self.uploader.has_targets(CHECKPOINT_DIR):
            self._report_uploads(self.uploads.start(step, folder, CHECKPOINT_DIR))
            return
        self._report_uploads(self.uploads.wait())
        uploaded = self.uploader.upload(folder, CHECKPOINT_DIR)
        self._report_uploads([(step, uploaded)])

    def _report_uploads(self, done: list[tuple[int, bool]]) -> None:
        for step, uploaded in done:
            self.reporter.emit(CheckpointEvent(time=now(), step=step, uploaded=uploaded))
            # Keep the newest checkpoint's files only.
            for old in self.work.glob("checkpoint-*"):
                if old.name != f"checkpoint-{self.last_checkpoint}":
                    shutil.rmtree(old, ignore_errors=True)

    def _cancel(self) -> None:
        self._report_uploads(self.uploads.wait())
        if self.last_checkpoint != self.step:
            self._checkpoint(background=False)
        self.reporter.emit(CancelledEvent(time=now(), step=self.step))
        raise _CancelledAtStep

    def _complete(self, validation_loss: float | None) -> None:
        self._report_uploads(self.uploads.wait())
        folder = self._save("adapter")
        uploaded = self.uploader.upload(folder, ADAPTER_DIR)
        location = self.uploader.location
        self.reporter.emit(
            CompletedEvent(
                time=now(),
                step=self.step,
                artifact_uri=location + ADAPTER_DIR if uploaded and location else None,
                validation_loss=validation_loss,
            )
        )


def _non_finite(which: str, value: float, step: int) -> TrainerError:
    return TrainerError(
        NON_FINITE_LOSS,
        f"the {which} loss became {value} at step {step}: the run diverged "
        "(a lower learning_rate, or max_grad_norm, usually helps)",
        step=step,
    )
