"""Benchmarks of the LoRA trainer (``trainer/``), in parts:

(a) ``--part a``: what the trainer's own machinery costs. The trainer (``trainer.train.run``,
    in this process) and a bare transformers + peft loop train the same tiny model on the same
    data: same batches, steps, seed, optimizer, schedule and clipping. The trainer also prints
    an event a step (with its one host sync for the loss), checkpoints every
    ``--checkpoint-every`` steps and uploads each checkpoint through presigned PUT URLs to a
    local S3 (moto, in a process of its own, as storage is elsewhere in production). Each side
    runs ``--repeat`` times, alternating, and the medians of tokens/s are compared. Goal: the
    trainer's tokens/s at least 0.95 of the bare loop's (reporting, checkpoints and uploads
    cost at most 5 %).

    The trainer's time is from its ``started`` event to its last ``step`` event, so the
    checkpoints and uploads made during training are inside it (the validation set is one
    example and evaluated at the end only, so evaluation is not measured); the bare loop's is
    from before its first step to after its last. Both count the same tokens (padding
    excluded). Each side goes first in every other pair of runs, so that a drift of the
    machine over the runs does not fall on one side. On a shared machine the wall-clock
    figures vary with the neighbours' load; the CPU-time ratio (this process's CPU, the upload
    thread's included) is the steadier of the two.

(b) ``--part b``: the Ray adapter's cost per poll of a caught-up job with 1,000 and 10,000
    logged steps, on a local Ray head (``bench/ray_poll.py``).
(c) ``--part c``: on a GPU, the trainer's tokens/s and the GPU utilization it reports (NVML) for
    a model of about 100M parameters with LoRA; where there is no GPU it says so.

    .venv/bin/python -m bench.trainer [--part a] [--steps 200] [--repeat 5]
        [--checkpoint-every 50] [--hidden-size 64] [--layers 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from infra.local.s3 import (
    LOCAL_ACCESS_KEY_ID,
    LOCAL_REGION,
    LOCAL_SECRET_ACCESS_KEY,
    create_buckets,
    demo_dataset_jsonl,
)
from shared.storage import ARTIFACTS_BUCKET, S3DatasetStorage, create_s3_client
from shared.training_events import CheckpointEvent, StartedEvent, StepEvent, TrainerSpec

GOAL_RATIO = 0.95
# As the trainer sets them: no progress bars from the libraries on this output.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_DATASET_BUCKET = "lora-datasets"
_DATASET_KEY = "bench/trainer.jsonl"


# --- part (a): the trainer against a bare loop ----------------------------------------------------


@dataclass(frozen=True)
class Measured:
    seconds: float
    cpu_seconds: float
    """CPU time of this process over the same span (all its threads: the upload's too)."""
    tokens: int
    steps: int
    checkpoints: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def tokens_per_cpu_second(self) -> float:
        return self.tokens / self.cpu_seconds


def hyperparameters(args: argparse.Namespace, base_model: Path) -> dict[str, Any]:
    """One epoch's worth of data or more, cut at ``--steps``; the validation set is one example
    and evaluated only at the run's end."""
    return {
        "base_model": str(base_model),
        "epochs": 1,
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": 1e-3,
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "target_modules": "all-linear",
        "max_seq_length": 256,
        "warmup_steps": 5,
        "eval_every_steps": 10**9,
        "max_validation_examples": 1,
        "checkpoint_every_steps": args.checkpoint_every or None,
        "seed": 11,
    }


@contextmanager
def local_s3() -> Iterator[str]:
    """moto's S3 in a process of its own; yields its endpoint."""
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local.s3", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        first = process.stdout.readline().strip() if process.stdout else ""
        if not first.startswith("S3 endpoint "):
            raise RuntimeError(f"the local S3 did not start: {first!r}")
        yield first.removeprefix("S3 endpoint ")
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_trainer(spec: TrainerSpec, device: str, tokens: int) -> Measured:
    """The real trainer, in this process; its time from ``started`` to the last ``step``."""
    from trainer.report import Reporter
    from trainer.train import RunOptions, run

    clocks: list[tuple[BaseModel, float, float]] = []

    class ClockedReporter(Reporter):
        def emit(self, event: BaseModel) -> None:
            super().emit(event)
            clocks.append((event, time.perf_counter(), time.process_time()))

    code = run(spec, RunOptions(device=device), ClockedReporter(io.StringIO()), threading.Event())
    if code != 0:
        raise RuntimeError(f"the trainer exited {code}: {clocks[-1][0]}")
    started = next(c for c in clocks if isinstance(c[0], StartedEvent))
    steps = [c for c in clocks if isinstance(c[0], StepEvent)]
    checkpoints = [c for c in clocks if isinstance(c[0], CheckpointEvent) and c[0].uploaded]
    return Measured(
        seconds=steps[-1][1] - started[1],
        cpu_seconds=steps[-1][2] - started[2],
        tokens=tokens,
        steps=len(steps),
        checkpoints=len(checkpoints),
    )


def tokens_trained(base_model: Path, data: bytes, hp_raw: dict[str, Any]) -> int:
    """The tokens (padding excluded) of the batches both sides train on."""
    from trainer.config import parse_hyperparameters
    from trainer.data import collate, micro_batches
    from trainer.model import load_tokenizer, pad_token_id
    from trainer.train import prepare_data

    hp, _ = parse_hyperparameters(hp_raw)
    tokenizer = load_tokenizer(str(base_model))
    prepared = prepare_data(tokenizer, data, hp)
    batches = micro_batches(prepared.training, hp.batch_size, shuffle_seed=hp.seed + 1)
    assert hp.max_steps is not None  # noqa: S101  (the bench always caps the steps)
    return sum(collate(batch, pad_token_id(tokenizer)).tokens for batch in batches[: hp.max_steps])


def run_bare(base_model: Path, data: bytes, hp_raw: dict[str, Any], device_name: str) -> Measured:
    """A bare transformers + peft loop on the same batches: no events, no sync a step, no
    checkpoint."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.config import parse_hyperparameters
    from trainer.data import collate, micro_batches
    from trainer.model import (
        choose_device,
        choose_precision,
        load_tokenizer,
        pad_token_id,
        quiet_peft,
    )
    from trainer.train import Plan, learning_rate_factor, prepare_data, seed_everything

    hp, _ = parse_hyperparameters(hp_raw)
    device = choose_device(device_name)
    precision = choose_precision(device, hp.bf16)
    tokenizer = load_tokenizer(str(base_model))
    pad = pad_token_id(tokenizer)
    prepared = prepare_data(tokenizer, data, hp)
    seed_everything(hp.seed)
    model: Any = AutoModelForCausalLM.from_pretrained(base_model, dtype=precision.weights)
    model.to(device)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=hp.target_modules,
    )
    with quiet_peft():
        model = get_peft_model(model, config)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=hp.learning_rate, weight_decay=hp.weight_decay, fused=device.type == "cuda"
    )
    plan = Plan.of(hp, len(prepared.training))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, learning_rate_factor(plan, hp.lr_scheduler)
    )
    batches = micro_batches(prepared.training, hp.batch_size, shuffle_seed=hp.seed + 1)
    batches = batches[: plan.total_steps]
    autocast: Callable[[], Any] = (
        (lambda: torch.autocast(device_type=device.type, dtype=precision.autocast))
        if precision.autocast is not None
        else nullcontext
    )
    tokens = 0
    started, started_cpu = time.perf_counter(), time.process_time()
    for examples in batches:
        batch = collate(examples, pad)
        tokens += batch.tokens
        with autocast():
            loss = model(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                labels=batch.labels.to(device),
                use_cache=False,
            ).loss
        loss.backward()
        if hp.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(trainable, hp.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return Measured(
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - started_cpu,
        tokens=tokens,
        steps=len(batches),
    )


def part_a(args: argparse.Namespace) -> int:
    import torch

    from trainer.tiny_model import build

    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    data = demo_dataset_jsonl(args.pairs)
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp, local_s3() as endpoint:
        base_model = build(
            Path(tmp) / "model", hidden_size=args.hidden_size, layers=args.layers, heads=4
        )
        client = create_s3_client(
            endpoint_url=endpoint,
            region=LOCAL_REGION,
            access_key_id=LOCAL_ACCESS_KEY_ID,
            secret_access_key=LOCAL_SECRET_ACCESS_KEY,
        )
        create_buckets(client)
        s3: Any = client  # the protocol types only what the storage classes call
        s3.create_bucket(Bucket=ARTIFACTS_BUCKET)
        s3.put_object(Bucket=_DATASET_BUCKET, Key=_DATASET_KEY, Body=data)
        dataset_url = client.generate_presigned_url(
            ClientMethod="get_object",
            Params={"Bucket": _DATASET_BUCKET, "Key": _DATASET_KEY},
            ExpiresIn=3600,
            HttpMethod="GET",
        )
        storage = S3DatasetStorage(client)
        hp = hyperparameters(args, base_model)

        checkpoints = (
            f"checkpoint + upload every {args.checkpoint_every} steps to local S3"
            if args.checkpoint_every
            else "no checkpoints"
        )
        print(
            f"part (a): trainer vs bare transformers + peft loop; tiny Llama hidden "
            f"{args.hidden_size}, {args.layers} layers; {args.steps} steps of "
            f"{args.batch_size} examples; {checkpoints}; {args.threads} torch thread(s); "
            f"device {args.device}; {args.repeat} runs each, alternating",
            flush=True,
        )
        trainer_runs: list[Measured] = []
        bare_runs: list[Measured] = []
        tokens = tokens_trained(base_model, data, hp)
        for attempt in range(args.repeat):
            spec = TrainerSpec(
                job_id=f"bench-{attempt}",
                dataset_url=dataset_url,
                hyperparameters=hp,
                artifacts=storage.upload_targets(uuid.uuid4(), uuid.uuid4()),
            )
            # Each side goes first every other time: the machine drifts (caches, clocks,
            # neighbours), and whichever always ran second would carry the drift.
            if attempt % 2 == 0:
                bare = run_bare(base_model, data, hp, args.device)
                ours = run_trainer(spec, args.device, tokens)
            else:
                ours = run_trainer(spec, args.device, tokens)
                bare = run_bare(base_model, data, hp, args.device)
            if not ours.steps == bare.steps == args.steps or bare.tokens != tokens:
                raise RuntimeError(
                    f"the trainer ran {ours.steps} steps, the bare loop {bare.steps}"
                )
            trainer_runs.append(ours)
            bare_runs.append(bare)
            print(
                f"  run {attempt + 1}: trainer {ours.tokens_per_second:7.0f} tok/s "
                f"({ours.tokens_per_cpu_second:7.0f} per CPU s, {ours.checkpoints} checkpoints "
                f"uploaded); bare {bare.tokens_per_second:7.0f} tok/s "
                f"({bare.tokens_per_cpu_second:7.0f} per CPU s)",
                flush=True,
            )
    trainer_median = statistics.median(r.tokens_per_second for r in trainer_runs)
    bare_median = statistics.median(r.tokens_per_second for r in bare_runs)
    wall = trainer_median / bare_median
    cpu = statistics.median(r.tokens_per_cpu_second for r in trainer_runs) / statistics.median(
        r.tokens_per_cpu_second for r in bare_runs
    )
    print(
        f"median tokens/s: trainer {trainer_median:.0f}, bare loop {bare_median:.0f}: "
        f"ratio {wall:.3f} (goal >= {GOAL_RATIO}: {'met' if wall >= GOAL_RATIO else 'NOT met'}); "
        f"per CPU second: ratio {cpu:.3f}"
    )
    return 0 if wall >= GOAL_RATIO else 1


# --- part (b): the Ray adapter's poll cost ---------------------------------------------------


def part_b(args: argparse.Namespace) -> int:
    """The Ray adapter's cost per poll of a caught-up job with 1,000 and 10,000 logged steps:
    bench/ray_poll.py, on a local Ray head whose jobs print the trainer's event lines."""
    from bench import ray_poll

    return ray_poll.main([])


# --- part (c): the trainer on a GPU -------------------------------------------------------------

# About 100 million parameters: a 12-layer Llama of width 768 (GPT-2 small's shape).
GPU_MODEL = {"hidden_size": 768, "layers": 12, "heads": 12}


def part_c(args: argparse.Namespace) -> int:
    """Tokens/s and the GPU utilization the trainer reports (NVML) for a model of about 100M
    parameters with LoRA, on the first GPU; says so and measures nothing where there is none."""
    import torch

    if not torch.cuda.is_available():
        print("part (c): no GPU on this machine: nothing measured (run it where one is lent)")
        return 0
    from transformers import AutoModelForCausalLM

    from trainer.tiny_model import build

    data = demo_dataset_jsonl(args.pairs)
    with tempfile.TemporaryDirectory(prefix="bench-trainer-gpu-") as tmp:
        base_model = build(Path(tmp) / "model", max_positions=512, **GPU_MODEL)
        parameters = sum(
            p.numel() for p in AutoModelForCausalLM.from_pretrained(base_model).parameters()
        )
        (Path(tmp) / "data.jsonl").write_bytes(data)
        hp = {**hyperparameters(args, base_model), "checkpoint_every_steps": None}
        with _serve_folder(Path(tmp)) as url:
            spec = TrainerSpec(
                job_id="bench-gpu", dataset_url=f"{url}/data.jsonl", hyperparameters=hp
            )
            events = _gpu_events(spec)
    steps = [e for e in events if isinstance(e, StepEvent)]
    # The first steps compile kernels and warm caches: the steady state is what a job sees.
    steady = steps[len(steps) // 5 :]
    utilization = [e.gpu_utilization for e in steady if e.gpu_utilization is not None]
    print(
        f"part (c): {torch.cuda.get_device_name(0)}; a {parameters / 1e6:.0f}M-parameter Llama "
        f"with LoRA; {len(steps)} steps of {args.batch_size} examples"
    )
    print(
        f"  tokens/s, median of the steady steps: "
        f"{statistics.median(e.tokens_per_second for e in steady):.0f}"
    )
    if utilization:
        print(f"  GPU utilization (NVML), median: {statistics.median(utilization):.0f} %")
    else:
        print("  GPU utilization: NVML gave no figures")
    return 0


@contextmanager
def _serve_folder(folder: Path) -> Iterator[str]:
    """The folder over HTTP on 127.0.0.1, as the trainer downloads datasets."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _gpu_events(spec: TrainerSpec) -> list[Any]:
    from trainer.report import Reporter
    from trainer.train import RunOptions, run

    events: list[Any] = []

    class Collecting(Reporter):
        def emit(self, event: BaseModel) -> None:
            events.append(event)

    code = run(spec, RunOptions(device="cuda"), Collecting(io.StringIO()), threading.Event())
    if code != 0:
        raise RuntimeError(f"the trainer exited {code}: {events[-1] if events else None}")
    return events


PARTS: dict[str, Callable[[argparse.Namespace], int]] = {"a": part_a, "b": part_b, "c": part_c}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.trainer", description="Benchmarks of the LoRA trainer."
    )
    parser.add_argument("--part", choices=sorted(PARTS), default="a")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--checkpoint-every", type=int, default=50, help="steps between checkpoints (0: none)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--pairs", type=int, help="examples in the dataset (default: twice what the steps take)"
    )
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: steady on shared cores)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    if args.pairs is None:
        args.pairs = 2 * args.steps * args.batch_size
    return PARTS[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
