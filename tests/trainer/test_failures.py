"""How a run ends when it cannot go on: the failed event's code and message, and the exit
code (1 failed, 2 unusable spec)."""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.s3 import demo_dataset_jsonl
from shared.training_events import CompletedEvent, StartedEvent, TrainerSpec
from tests.cluster.support import DatasetServer
from tests.trainer.support import PutServer, make_spec, run_in_process, spec_argument
from trainer import EXIT_FAILED, EXIT_USAGE
from trainer.errors import (
    DATASET_UNAVAILABLE,
    INVALID_HYPERPARAMETERS,
    INVALID_SPEC,
    MODEL_UNAVAILABLE,
    NON_FINITE_LOSS,
    UPLOAD_FAILED,
)


def test_a_diverging_run_fails_with_non_finite_loss(
    tiny_model: Path, datasets: DatasetServer
) -> None:
    """An absurd learning rate without clipping makes the loss NaN; the run stops at that step
    as failed (non_finite_loss) with a message saying so, and exits 1."""
    spec = make_spec(
        datasets.publish(demo_dataset_jsonl(32)),
        tiny_model,
        learning_rate=1e30,
        max_grad_norm=None,
        warmup_steps=0,
    )
    run = run_in_process(spec)
    assert run.returncode == EXIT_FAILED, run.describe()
    failure = run.failure
    assert failure.code == NON_FINITE_LOSS
    assert "loss became nan" in failure.message
    assert failure.step == len(run.steps) + 1
    assert all(math.isfinite(step.training_loss) for step in run.steps)
    assert not run.of_type(CompletedEvent)
    assert run.events[-1] == failure


@pytest.fixture
def put_server(request: pytest.FixtureRequest) -> Iterator[PutServer]:
    server = PutServer(request.param)
    yield server
    server.close()


@pytest.mark.parametrize("put_server", [503], indirect=True)
def test_an_upload_that_keeps_failing_fails_the_run(
    tiny_model: Path, datasets: DatasetServer, put_server: PutServer
) -> None:
    """A checkpoint upload answered with 5xx is tried --upload-attempts times, then the run
    fails with upload_failed (exit 1), naming the file but not the URL."""
    spec = make_spec(datasets.publish(demo_dataset_jsonl(32)), tiny_model, put_server.targets())
    run = run_in_process(spec, "--upload-attempts", "3", "--retry-backoff", "0.01")
    assert run.returncode == EXIT_FAILED, run.describe()
    failure = run.failure
    assert failure.code == UPLOAD_FAILED
    assert "checkpoint/adapter_model.safetensors failed 3 times; last: HTTP 503" in failure.message
    assert "secret" not in failure.message
    assert len(put_server.puts) == 3
    assert not run.of_type(CompletedEvent)


@pytest.mark.parametrize("put_server", [403], indirect=True)
def test_an_upload_refused_for_its_signature_fails_at_once(
    tiny_model: Path, datasets: DatasetServer, put_server: PutServer
) -> None:
    """An upload refused with 403 (an expired or bad signature) is not tried again: the run
    fails with upload_failed at once, saying the signature may have expired."""
    spec = make_spec(
        datasets.publish(demo_dataset_jsonl(32)),
        tiny_model,
        put_server.targets(),
        checkpoint_every_steps=None,
    )
    run = run_in_process(spec, "--upload-attempts", "5", "--retry-backoff", "5")
    assert run.returncode == EXIT_FAILED, run.describe()
    assert run.failure.code == UPLOAD_FAILED
    assert "adapter/adapter_model.safetensors was refused: HTTP 403" in run.failure.message
    assert "expired signature" in run.failure.message
    assert len(put_server.puts) == 1


def test_a_base_model_that_cannot_be_loaded_is_model_unavailable(
    tmp_path: Path, datasets: DatasetServer
) -> None:
    """A base model that is not there fails the run with model_unavailable (exit 1)."""
    spec = make_spec(datasets.publish(demo_dataset_jsonl(8)), tmp_path / "no-model")
    run = run_in_process(spec)
    assert run.returncode == EXIT_FAILED
    assert run.failure.code == MODEL_UNAVAILABLE
    assert "no-model" in run.failure.message
    assert not run.of_type(StartedEvent)


def test_a_dataset_url_that_answers_404_is_dataset_unavailable(
    tiny_model: Path, datasets: DatasetServer
) -> None:
    """A dataset that cannot be downloaded fails the run with dataset_unavailable (exit 1)."""
    spec = make_spec(datasets.base_url + "/datasets/gone.jsonl?token=signed", tiny_model)
    run = run_in_process(spec)
    assert run.returncode == EXIT_FAILED
    assert run.failure.code == DATASET_UNAVAILABLE
    assert "HTTP 404" in run.failure.message


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--spec", "%%%"], "not base64url"),
        (["--spec", base64.urlsafe_b64encode(b"[]").decode()], "not a TrainerSpec"),
        (
            ["--spec", base64.urlsafe_b64encode(b'{"dataset_url": "http://x"}').decode()],
            "job_id: Field required",
        ),
        (["--spec-file", "/nonexistent/spec.json"], "cannot be read"),
    ],
)
def test_an_unreadable_spec_exits_2_with_a_failed_event(argv: list[str], fragment: str) -> None:
    """A spec that cannot be read is refused with exit code 2 and an invalid_spec event."""
    run = run_in_process(None, *argv)
    assert run.returncode == EXIT_USAGE
    assert run.failure.code == INVALID_SPEC
    assert fragment in run.failure.message


@pytest.mark.parametrize(
    ("hyperparameters", "fragment"),
    [
        ({"epochs": 0}, "hyperparameter epochs: Input should be greater than or equal to 1"),
        ({"learning_rate": "fast"}, "hyperparameter learning_rate"),
        ({"lora_rank": True}, "hyperparameter lora_rank"),
        ({"lr_scheduler": "step"}, "hyperparameter lr_scheduler"),
        ({"base_model": ""}, "hyperparameter base_model"),
    ],
)
def test_refused_hyperparameters_exit_2_before_anything_runs(
    datasets: DatasetServer, hyperparameters: dict[str, object], fragment: str
) -> None:
    """A hyperparameter of the wrong type or out of bounds refuses the spec: exit code 2 and an
    invalid_hyperparameters event naming it."""
    spec = TrainerSpec(
        job_id="j",
        dataset_url=datasets.base_url + "/never-fetched",
        hyperparameters={"base_model": "/unused", **hyperparameters},
    )
    run = run_in_process(None, "--spec", spec_argument(spec))
    assert run.returncode == EXIT_USAGE
    assert run.failure.code == INVALID_HYPERPARAMETERS
    assert fragment in run.failure.message
    assert len(run.events) == 1


def test_a_spec_without_a_base_model_takes_the_default_or_exits_2(
    datasets: DatasetServer,
) -> None:
    """With no base_model hyperparameter and no --base-model, the spec is refused (exit 2)."""
    spec = TrainerSpec(job_id="j", dataset_url=datasets.base_url + "/never-fetched")
    run = run_in_process(None, "--spec", spec_argument(spec))
    assert run.returncode == EXIT_USAGE
    assert run.failure.code == INVALID_HYPERPARAMETERS
    assert "no base model" in run.failure.message
