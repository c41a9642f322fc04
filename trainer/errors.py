"""The ways a run stops early, each with the code its ``failed`` event carries."""

from __future__ import annotations

from typing import Final

DATASET_INVALID: Final = "dataset_invalid"
DATASET_UNAVAILABLE: Final = "dataset_unavailable"
MODEL_UNAVAILABLE: Final = "model_unavailable"
NON_FINITE_LOSS: Final = "non_finite_loss"
UPLOAD_FAILED: Final = "upload_failed"
INVALID_HYPERPARAMETERS: Final = "invalid_hyperparameters"
INVALID_SPEC: Final = "invalid_spec"
INTERNAL: Final = "internal"


class TrainerError(Exception):
    """The run cannot go on: ``code`` is the failed event's stable word, ``message`` the text
    for a person, ``step`` the last step done when it is known."""

    def __init__(self, code: str, message: str, *, step: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.step = step


class SpecError(TrainerError):
    """The spec (or a hyperparameter in it) is refused before anything runs: exit code 2."""


class Cancelled(Exception):
    """SIGTERM arrived before the first step: there is nothing to save."""
