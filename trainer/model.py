"""The base model and its tokenizer, loaded with ``from_pretrained``, and the LoRA adapter on it.

``base_model`` is a Hugging Face model id (downloaded to the cluster's cache) or a directory
written with ``save_pretrained`` (tests and ``make dev`` use ``python -m trainer.tiny_model``):
both go through the same ``AutoTokenizer`` / ``AutoModelForCausalLM`` path.

Precision: on a GPU that supports bf16 the frozen base weights are loaded in bf16 and the forward
pass runs under bf16 autocast, while the LoRA weights (and so the optimizer state) stay fp32;
anywhere else everything is fp32 (``bf16`` true or false forces the choice).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from trainer.config import Hyperparameters
from trainer.errors import INVALID_HYPERPARAMETERS, MODEL_UNAVAILABLE, TrainerError

# Progress bars and fork warnings would only clutter the log the adapter reads.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft asks transformers about gradient checkpointing by a name transformers has renamed;
    the warning says nothing about the run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        yield


@dataclass(frozen=True)
class Precision:
    weights: torch.dtype
    """The dtype the frozen base weights are loaded in."""
    autocast: torch.dtype | None
    """The dtype the forward pass runs under (None: no autocast)."""


def choose_device(name: str | None) -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:1"), else the first GPU where there is one, else the CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_precision(device: torch.device, bf16: bool | None) -> Precision:
    if bf16 is None:
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if not bf16:
        return Precision(torch.float32, None)
    # On a CPU, bf16 base weights are slower than fp32 ones: keep them fp32, autocast the math.
    weights = torch.bfloat16 if device.type == "cuda" else torch.float32
    return Precision(weights, torch.bfloat16)


def load_tokenizer(name: str) -> Any:
    """The base model's tokenizer, with a pad token (its EOS where it has none: padding is
    masked from attention and loss anyway)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # any failure to load is the model being unavailable
        raise TrainerError(
            MODEL_UNAVAILABLE, f"the tokenizer of {name!r} could not be loaded: {_reason(exc)}"
        ) from exc
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pad_token_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else 0


def load_model(name: str, device: torch.device, precision: Precision) -> Any:
    """The base model on ``device``, in ``precision.weights``, in training mode."""
    from transformers import AutoModelForCausalLM

    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            name,
            dtype=precision.weights,
            device_map={"": device} if device.type == "cuda" else None,
        )
    except Exception as exc:  # any failure to load is the model being unavailable
        raise TrainerError(
            MODEL_UNAVAILABLE, f"the model {name!r} could not be loaded: {_reason(exc)}"
        ) from exc
    if device.type != "cuda":
        model.to(device)
    model.config.use_cache = False
    return model


def apply_lora(model: Any, hp: Hyperparameters) -> Any:
    """The model with a fresh LoRA adapter (initialized from the torch seed); only the adapter's
    weights train."""
    from peft import LoraConfig, get_peft_model
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    target_modules: list[str] | str | None = hp.target_modules
    if target_modules is None:
        model_type = getattr(model.config, "model_type", None)
        if model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
            target_modules = "all-linear"
    if hp.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad (the base is frozen).
        options = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # its name since transformers 5.x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=target_modules,
    )
    try:
        with quiet_peft():
            return get_peft_model(model, config)
    except ValueError as exc:
        raise TrainerError(
            INVALID_HYPERPARAMETERS, f"LoRA cannot be applied to this model: {_reason(exc)}"
        ) from exc


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
