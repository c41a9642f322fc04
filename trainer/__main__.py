"""``python -m trainer``: run one training job from its spec; see ``trainer/__init__.py``."""

from __future__ import annotations

import argparse
import base64
import binascii
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from shared.training_events import FailedEvent, TrainerSpec
from trainer import EXIT_USAGE
from trainer.errors import INVALID_SPEC
from trainer.report import Reporter, now
from trainer.train import RunOptions, run
from trainer.upload import UploadPolicy

_EPILOG = """\
The spec is a TrainerSpec (shared/training_events.py) as JSON. Events go to stdout, one a line
(LORA_EVENT {json}); anything for a person goes to stderr.

exit codes:
  0  completed: the final adapter is saved (and uploaded where upload URLs were given)
  1  failed: a `failed` event says why
  2  the spec or the command line is unusable (nothing was trained)
  3  cancelled by SIGTERM or SIGINT, at a step boundary, after the checkpoint was uploaded
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Fine-tune a LoRA adapter for one job, as its TrainerSpec says.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", help="the spec's JSON, base64url-encoded (padding optional)")
    source.add_argument("--spec-file", type=Path, help="a file holding the spec's JSON")
    parser.add_argument(
        "--device", help="cpu, cuda or cuda:N (default: the first GPU where there is one)"
    )
    parser.add_argument(
        "--base-model",
        help="the base model when the hyperparameters name none (a Hugging Face id or a folder)",
    )
    parser.add_argument(
        "--max-dataset-bytes",
        type=int,
        help="the dataset size limit (default: the max_dataset_bytes hyperparameter, 256 MiB)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="keep the checkpoints and the adapter here (default: a temporary folder)",
    )
    parser.add_argument(
        "--upload-attempts", type=int, default=4, help="tries of each upload (default 4)"
    )
    parser.add_argument(
        "--retry-backoff",
        type=float,
        default=1.0,
        help="seconds before the second try of a download or upload, doubling after (default 1)",
    )
    return parser


def read_spec(text: str | None, path: Path | None) -> TrainerSpec:
    """The spec from ``--spec`` (base64url JSON) or ``--spec-file``; ValueError says what is
    wrong with it."""
    if path is not None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"the spec file cannot be read: {exc.strerror}") from exc
    else:
        assert text is not None  # noqa: S101  (argparse requires one of the two)
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("--spec is not base64url") from exc
    try:
        return TrainerSpec.model_validate_json(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "the spec"
        raise ValueError(f"the spec is not a TrainerSpec: {where}: {error['msg']}") from exc


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (and do nothing else); the previous handlers come back
    after."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: list[str] | None = None, reporter: Reporter | None = None) -> int:
    args = _parser().parse_args(argv)
    reporter = reporter or Reporter()
    try:
        spec = read_spec(args.spec, args.spec_file)
    except ValueError as exc:
        reporter.emit(FailedEvent(time=now(), code=INVALID_SPEC, message=str(exc)))
        return EXIT_USAGE
    if args.upload_attempts < 1 or args.retry_backoff < 0:
        reporter.emit(
            FailedEvent(
                time=now(),
                code=INVALID_SPEC,
                message="--upload-attempts must be at least 1 and --retry-backoff not negative",
            )
        )
        return EXIT_USAGE
    options = RunOptions(
        device=args.device,
        work_dir=args.output_dir,
        base_model=args.base_model,
        max_dataset_bytes=args.max_dataset_bytes,
        upload_policy=UploadPolicy(
            attempts=args.upload_attempts, backoff_seconds=args.retry_backoff
        ),
        download_backoff_seconds=args.retry_backoff,
    )
    stop = threading.Event()
    with stop_on_signals(stop):
        return run(spec, options, reporter, stop)


if __name__ == "__main__":
    sys.exit(main())
