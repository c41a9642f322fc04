"""The hyperparameters a run reads from its spec, with their defaults and bounds.

Every hyperparameter is optional but ``base_model`` (which ``--base-model``, the cluster's
default model, may supply); those left out take the defaults below, the same as the job schema's
(``training_job_hyperparameter_rules()`` in the migrations) and the cluster simulator's
(``epochs`` 3, ``batch_size`` 8, ``learning_rate`` 2e-4, ``lr_scheduler`` cosine, warmup 5 % of
the steps, validation twice an epoch, a checkpoint every 100 steps). The trainer's bounds are
wider than the job schema's: it also serves specs that did not come through the database. Names
the trainer does not know are ignored with a warning on stderr, so a job written for another
trainer still runs; a known name with a value of the wrong type or out of bounds refuses the
spec.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainer.errors import INVALID_HYPERPARAMETERS, SpecError

DEFAULT_MAX_DATASET_BYTES = 256 * 1024 * 1024

# Settings of a job that are the runner's business, not the trainer's: ignored without a warning.
RUNNER_SETTINGS = frozenset({"max_cost"})


class Hyperparameters(BaseModel):
    """One run's training settings (``TrainerSpec.hyperparameters``)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True, populate_by_name=True)

    base_model: str | None = Field(
        default=None,
        min_length=1,
        description="a Hugging Face model id, or a local directory saved with save_pretrained",
    )
    epochs: int = Field(default=3, ge=1, le=1000)
    learning_rate: float = Field(default=2e-4, gt=0, allow_inf_nan=False)
    batch_size: int = Field(default=8, ge=1, le=4096, description="examples a micro-batch")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, le=1024, description="micro-batches an optimizer step"
    )
    max_seq_length: int = Field(
        default=1024, ge=8, le=131072, description="tokens an example; longer ones are cut"
    )
    lora_r: int = Field(
        default=16, ge=1, le=1024, validation_alias=AliasChoices("lora_r", "lora_rank")
    )
    lora_alpha: int = Field(default=32, ge=1, le=65536)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        default=None,
        description="modules LoRA adapts; None: peft's choice for the architecture "
        "(q_proj and v_proj for Llama, Qwen, Mistral), else all linear layers",
    )
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(default=0.05, ge=0, le=0.5)
    warmup_steps: int | None = Field(default=None, ge=0, description="overrides warmup_ratio")
    weight_decay: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    max_grad_norm: float | None = Field(
        default=1.0, gt=0, allow_inf_nan=False, description="None: no clipping"
    )
    eval_every_steps: int | None = Field(
        default=None,
        ge=1,
        validation_alias=AliasChoices("eval_every_steps", "eval_steps"),
        description="None: twice an epoch; the validation loss is also taken at each epoch's end",
    )
    checkpoint_every_steps: int | None = Field(
        default=100, ge=1, description="None: no checkpoint but the one a cancel saves"
    )
    validation_split: float = Field(default=0.1, gt=0, le=0.5)
    max_validation_examples: int = Field(default=512, ge=1)
    gradient_checkpointing: bool = False
    bf16: bool | None = Field(
        default=None, description="None: bf16 autocast where the GPU supports it, fp32 elsewhere"
    )
    seed: int = 42
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many steps")
    max_dataset_bytes: int = Field(default=DEFAULT_MAX_DATASET_BYTES, ge=1)

    @model_validator(mode="after")
    def _named_modules(self) -> Hyperparameters:
        if isinstance(self.target_modules, list) and not all(self.target_modules):
            raise ValueError("target_modules must name modules")
        return self


def known_names() -> set[str]:
    """Every hyperparameter name the trainer reads, aliases included."""
    names: set[str] = set()
    for name, field in Hyperparameters.model_fields.items():
        names.add(name)
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
    return names


def parse_hyperparameters(raw: dict[str, Any]) -> tuple[Hyperparameters, list[str]]:
    """The hyperparameters of a spec and the names it gave that the trainer ignores.

    Raises :class:`SpecError` (``invalid_hyperparameters``) naming the first bad one."""
    try:
        parsed = Hyperparameters.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = f"hyperparameter {error['loc'][0]}" if error["loc"] else "hyperparameters"
        raise SpecError(INVALID_HYPERPARAMETERS, f"{where}: {error['msg']}") from exc
    return parsed, sorted(set(raw) - known_names() - RUNNER_SETTINGS)
