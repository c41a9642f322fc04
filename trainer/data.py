"""The dataset: downloaded through its signed URL, checked line by line, tokenized with the prompt
masked from the loss, split into training and validation examples, and batched.

A dataset is JSON Lines, one training example a line, in any of these shapes (a file may mix
them; other keys on a line are ignored):

* ``{"prompt": ..., "completion": ...}``
* ``{"input": ..., "output": ...}``
* ``{"instruction": ..., "response": ...}`` (the demo datasets), or Alpaca's
  ``{"instruction": ..., "input": ..., "output": ...}`` where ``input`` may be empty
* ``{"messages": [{"role": "system" | "user" | "assistant", "content": ...}, ...]}`` with at
  least one assistant turn; every assistant turn is trained on, everything else is prompt.

Blank lines are skipped. A bad line refuses the whole dataset, with each bad line's number and
reason (the first few of them) in the ``dataset_invalid`` message.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import httpx

from trainer.errors import DATASET_INVALID, DATASET_UNAVAILABLE, Cancelled, TrainerError

if TYPE_CHECKING:
    import torch

IGNORE_INDEX: Final = -100
ROLES: Final = ("system", "user", "assistant")
MAX_REPORTED_ERRORS: Final = 10
_PAIR_KEYS: Final = (("prompt", "completion"), ("input", "output"))
_DOWNLOAD_ATTEMPTS: Final = 3
_DOWNLOAD_TIMEOUT: Final = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=10.0)


# --- download -------------------------------------------------------------------------------------


def download_dataset(
    url: str,
    *,
    max_bytes: int,
    should_stop: Callable[[], bool] = lambda: False,
    attempts: int = _DOWNLOAD_ATTEMPTS,
    backoff_seconds: float = 1.0,
    timeout: httpx.Timeout = _DOWNLOAD_TIMEOUT,
) -> bytes:
    """The dataset's bytes, streamed through ``url`` with a size limit.

    Connection errors and 5xx answers are tried ``attempts`` times; any other error answer fails
    at once. The URL is signed, so no message repeats it.

    Raises:
        TrainerError: ``dataset_unavailable`` (cannot be fetched) or ``dataset_invalid`` (over
            ``max_bytes``).
        Cancelled: ``should_stop`` became true during the download.
    """
    last_problem = "no attempt was made"
    for attempt in range(1, attempts + 1):
        try:
            return _download_once(
                url, max_bytes=max_bytes, should_stop=should_stop, timeout=timeout
            )
        except _Transient as exc:
            last_problem = str(exc)
        except httpx.TransportError as exc:
            last_problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if attempt < attempts:
            time.sleep(backoff_seconds * 2 ** (attempt - 1))
    raise TrainerError(
        DATASET_UNAVAILABLE,
        f"the dataset could not be downloaded after {attempts} attempts: {last_problem}",
    )


class _Transient(Exception):
    """An answer worth trying again (5xx, 429, 408)."""


def _download_once(
    url: str, *, max_bytes: int, should_stop: Callable[[], bool], timeout: httpx.Timeout
) -> bytes:
    with (
        httpx.Client(timeout=timeout, follow_redirects=False) as client,
        client.stream("GET", url) as response,
    ):
        status = response.status_code
        if status >= 500 or status in (408, 429):
            raise _Transient(f"the dataset URL answered HTTP {status}")
        if status != 200:
            raise TrainerError(
                DATASET_UNAVAILABLE,
                f"the dataset URL answered HTTP {status}"
                + (" (an expired or wrong signature?)" if status in (401, 403) else ""),
            )
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(max_bytes, int(declared))
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes, None)
            chunks.append(chunk)
            if should_stop():
                raise Cancelled
        return b"".join(chunks)


def _too_large(max_bytes: int, size: int | None) -> TrainerError:
    told = f" ({size} bytes)" if size is not None else ""
    return TrainerError(
        DATASET_INVALID,
        f"the dataset is larger than the limit of {max_bytes} bytes{told}; "
        "raise max_dataset_bytes to train on it",
    )


# --- parse and check ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Example:
    """One training example as turns: the assistant turns are learnt, the rest is prompt."""

    messages: tuple[Message, ...]
    line: int


class _BadLine(ValueError):
    pass


def parse_dataset(data: bytes) -> list[Example]:
    """Every example of a JSONL dataset, in file order.

    Raises:
        TrainerError: ``dataset_invalid``, with each bad line's number and reason (the first
            ``MAX_REPORTED_ERRORS``), or when the file holds no example.
    """
    examples: list[Example] = []
    errors: list[str] = []
    bad_lines = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(f"line {number}: not UTF-8 text")
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        try:
            examples.append(Example(messages=parse_line(text), line=number))
        except _BadLine as exc:
            bad_lines += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(f"line {number}: {exc}")
    if errors:
        more = f" (and {bad_lines - len(errors)} more bad lines)" if bad_lines > len(errors) else ""
        raise TrainerError(
            DATASET_INVALID,
            f"the dataset has {bad_lines} bad line{'s' if bad_lines != 1 else ''}: "
            + "; ".join(errors)
            + more,
        )
    if not examples:
        raise TrainerError(DATASET_INVALID, "the dataset holds no example")
    return examples


def parse_line(text: str) -> tuple[Message, ...]:
    """The turns of one line; raises ``_BadLine`` (a ValueError) with the reason."""
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise _BadLine(f"not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise _BadLine(f"a JSON object is expected, not {_json_kind(record)}")
    shapes = [
        name
        for name, present in (
            ("messages", "messages" in record),
            ("prompt/completion", "prompt" in record or "completion" in record),
            ("instruction", "instruction" in record or "response" in record),
            ("input/output", ("input" in record or "output" in record)),
        )
        if present
    ]
    if "instruction" in shapes:
        # Alpaca's instruction/input/output is one shape, not two.
        shapes = [shape for shape in shapes if shape != "input/output"]
    if not shapes:
        raise _BadLine(
            "no training example: expected prompt/completion, input/output, "
            "instruction/response or messages"
        )
    if len(shapes) > 1:
        raise _BadLine(f"mixes the shapes {' and '.join(shapes)}; use one")
    shape = shapes[0]
    if shape == "messages":
        return _messages(record["messages"])
    if shape == "instruction":
        instruction = _text(record, "instruction")
        if "response" in record and "output" in record:
            raise _BadLine("has both 'response' and 'output'; use one")
        answer = _text(record, "response" if "response" in record else "output")
        extra = record.get("input", "")
        if not isinstance(extra, str):
            raise _BadLine(f"'input' must be a string, not {_json_kind(extra)}")
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        return (Message("user", prompt), Message("assistant", answer))
    question, answer = next(pair for pair in _PAIR_KEYS if "/".join(pair) == shape)
    return (
        Message("user", _text(record, question)),
        Message("assistant", _text(record, answer)),
    )


def _text(record: dict[str, Any], key: str) -> str:
    if key not in record:
        raise _BadLine(f"'{key}' is missing")
    value = record[key]
    if not isinstance(value, str):
        raise _BadLine(f"'{key}' must be a string, not {_json_kind(value)}")
    if not value.strip():
        raise _BadLine(f"'{key}' is empty")
    return value


def _messages(value: Any) -> tuple[Message, ...]:
    if not isinstance(value, list):
        raise _BadLine(f"'messages' must be a list, not {_json_kind(value)}")
    if not value:
        raise _BadLine("'messages' is empty")
    turns: list[Message] = []
    for index, item in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(item, dict):
            raise _BadLine(f"{where} must be an object with role and content")
        role = item.get("role")
        if role not in ROLES:
            raise _BadLine(f"{where}.role must be one of {', '.join(ROLES)}, not {role!r}")
        content = item.get("content")
        if not isinstance(content, str):
            raise _BadLine(f"{where}.content must be a string, not {_json_kind(content)}")
        if role == "assistant" and not content.strip():
            raise _BadLine(f"{where}.content is empty")
        turns.append(Message(role, content))
    if not any(turn.role == "assistant" for turn in turns):
        raise _BadLine("'messages' has no assistant turn to learn")
    return tuple(turns)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


# --- tokenize -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    """``IGNORE_INDEX`` on prompt tokens: only the answers are learnt."""


def render(tokenizer: Any, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
    """The example's text and the character spans of what is learnt (each assistant turn, with
    what the template closes it with), through the tokenizer's chat template where it has one.

    Without a template the turns are written one after the other (``role: content`` for a
    conversation, the prompt and the answer on their own lines for a pair), and the answer is
    followed by the EOS token so the model learns to stop.
    """
    if getattr(tokenizer, "chat_template", None):
        return _render_with_template(tokenizer, messages)
    eos = tokenizer.eos_token or ""
    pair = len(messages) == 2 and [m.role for m in messages] == ["user", "assistant"]
    text = ""
    spans: list[tuple[int, int]] = []
    for message in messages:
        if text:
            text += "\n"
        if message.role == "assistant":
            text += "" if pair else "assistant: "
            start = len(text)
            text += message.content + eos
            spans.append((start, len(text)))
        else:
            text += message.content if pair else f"{message.role}: {message.content}"
    return text, spans


def _render_with_template(
    tokenizer: Any, messages: Sequence[Message]
) -> tuple[str, list[tuple[int, int]]]:
    turns = [{"role": m.role, "content": m.content} for m in messages]
    text: str = tokenizer.apply_chat_template(turns, tokenize=False)
    spans: list[tuple[int, int]] = []
    searched_from = 0
    for index, message in enumerate(messages):
        if message.role != "assistant":
            continue
        before: str = tokenizer.apply_chat_template(
            turns[:index], tokenize=False, add_generation_prompt=True
        )
        through: str = tokenizer.apply_chat_template(turns[: index + 1], tokenize=False)
        if through.startswith(before) and text.startswith(through):
            spans.append((len(before), len(through)))
            searched_from = len(through)
        else:
            # A template that renders earlier turns differently once later ones follow (some
            # drop the reasoning of past turns): learn the answer's text where it stands.
            start = text.find(message.content, searched_from)
            if start < 0:
                continue
            spans.append((start, start + len(message.content)))
            searched_from = start + len(message.content)
    return text, spans


def tokenize_example(
    tokenizer: Any, example: Example, max_seq_length: int
) -> TokenizedExample | None:
    """Token ids and labels of an example, cut to ``max_seq_length``; None when the cut leaves
    no answer token to learn."""
    text, spans = render(tokenizer, example.messages)
    templated = bool(getattr(tokenizer, "chat_template", None))
    encoded = tokenizer(
        text,
        add_special_tokens=not templated,
        return_offsets_mapping=True,
        truncation=True,
        max_length=max_seq_length,
    )
    input_ids: list[int] = list(encoded["input_ids"])
    labels = [IGNORE_INDEX] * len(input_ids)
    for position, (start, end) in enumerate(encoded["offset_mapping"]):
        if end > start and any(a <= start < b for a, b in spans):
            labels[position] = input_ids[position]
    # The first token is never predicted: a label there would be counted but not learnt.
    if not any(label != IGNORE_INDEX for label in labels[1:]):
        return None
    return TokenizedExample(input_ids=input_ids, labels=labels)


def tokenize_all(
    tokenizer: Any, examples: Sequence[Example], max_seq_length: int
) -> tuple[list[TokenizedExample], int]:
    """The tokenized examples and how many were dropped (nothing left to learn once cut)."""
    kept: list[TokenizedExample] = []
    dropped = 0
    for example in examples:
        tokenized = tokenize_example(tokenizer, example, max_seq_length)
        if tokenized is None:
            dropped += 1
        else:
            kept.append(tokenized)
    return kept, dropped


# --- split and batch ------------------------------------------------------------------------------


def split(
    examples: Sequence[TokenizedExample], *, fraction: float, max_validation: int, seed: int
) -> tuple[list[TokenizedExample], list[TokenizedExample]]:
    """A fixed, seeded split into training and validation examples: ``fraction`` of them (at
    least 1, at most ``max_validation``) for validation.

    Raises:
        TrainerError: ``dataset_invalid`` with fewer than 2 usable examples.
    """
    if len(examples) < 2:
        raise TrainerError(
            DATASET_INVALID,
            f"the dataset has {len(examples)} usable example(s); at least 2 are needed "
            "(1 to train on, 1 to validate with)",
        )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)  # noqa: S311  (a data split, not security)
    count = max(1, min(round(len(examples) * fraction), max_validation, len(examples) - 1))
    validation = sorted(order[:count])
    training = sorted(order[count:])
    return [examples[i] for i in training], [examples[i] for i in validation]


def micro_batches(
    examples: Sequence[TokenizedExample], batch_size: int, *, shuffle_seed: int | None
) -> list[list[TokenizedExample]]:
    """The examples in batches of ``batch_size`` (the last may be smaller), shuffled by
    ``shuffle_seed`` (None keeps their order)."""
    order = list(range(len(examples)))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)  # noqa: S311  (batch order, not security)
    return [
        [examples[i] for i in order[start : start + batch_size]]
        for start in range(0, len(order), batch_size)
    ]


@dataclass(frozen=True)
class Batch:
    """Padded tensors of a micro-batch (on the CPU), and its counts, known without a device
    sync."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    tokens: int
    """Real (unpadded) tokens."""
    predicted_tokens: int
    """Label tokens after the shift: the terms of the loss."""


def collate(examples: Sequence[TokenizedExample], pad_token_id: int) -> Batch:
    """One right-padded batch; padding is masked from attention and loss."""
    import torch

    length = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    tokens = predicted = 0
    for row, example in enumerate(examples):
        size = len(example.input_ids)
        input_ids[row, :size] = torch.tensor(example.input_ids, dtype=torch.long)
        attention_mask[row, :size] = 1
        labels[row, :size] = torch.tensor(example.labels, dtype=torch.long)
        tokens += size
        predicted += sum(1 for label in example.labels[1:] if label != IGNORE_INDEX)
    return Batch(input_ids, attention_mask, labels, tokens, predicted)
