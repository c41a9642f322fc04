"""The dataset: the shapes accepted, each bad line refused with its number and reason, the
prompt masked from the loss, the split, and the download's limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.local.s3 import demo_dataset_jsonl
from shared.training_events import FailedEvent, StartedEvent
from tests.cluster.support import DatasetServer
from tests.trainer.support import make_spec, run_in_process
from trainer import EXIT_FAILED
from trainer.data import (
    IGNORE_INDEX,
    Example,
    Message,
    TokenizedExample,
    download_dataset,
    parse_dataset,
    split,
    tokenize_example,
)
from trainer.errors import DATASET_INVALID, DATASET_UNAVAILABLE, TrainerError

GOOD_LINE = json.dumps({"prompt": "What is 2 + 2?", "completion": "4"})


def jsonl(*records: Any) -> bytes:
    return ("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n").encode()


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"prompt": "p", "completion": "c"},
            [("user", "p"), ("assistant", "c")],
        ),
        ({"input": "i", "output": "o"}, [("user", "i"), ("assistant", "o")]),
        ({"instruction": "do it", "response": "done"}, [("user", "do it"), ("assistant", "done")]),
        (
            {"instruction": "add", "input": "2 and 3", "output": "5"},
            [("user", "add\n\n2 and 3"), ("assistant", "5")],
        ),
        (
            {"instruction": "add", "input": "", "output": "5"},
            [("user", "add"), ("assistant", "5")],
        ),
        (
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                ],
                "id": 17,
            },
            [("system", "be brief"), ("user", "hi"), ("assistant", "hello")],
        ),
    ],
)
def test_each_accepted_shape_becomes_turns(record: dict[str, Any], expected: list[Any]) -> None:
    """prompt/completion, input/output, instruction/response (and Alpaca's instruction/input/
    output) and chat messages are read as turns; other keys are ignored."""
    (example,) = parse_dataset(jsonl(record))
    assert [(m.role, m.content) for m in example.messages] == expected


def test_the_demo_dataset_is_accepted() -> None:
    """The local stack's demo dataset (instruction/response) is training data as it is."""
    examples = parse_dataset(demo_dataset_jsonl())
    assert len(examples) == 200


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "a JSON object is expected, not a list"),
        ('"text"', "a JSON object is expected, not a string"),
        ('{"prompt": "p"}', "'completion' is missing"),
        ('{"completion": "c"}', "'prompt' is missing"),
        ('{"prompt": 3, "completion": "c"}', "'prompt' must be a string, not a number"),
        ('{"prompt": "p", "completion": "   "}', "'completion' is empty"),
        ('{"input": "i", "output": null}', "'output' must be a string, not null"),
        ('{"instruction": "i"}', "'output' is missing"),
        ('{"instruction": "i", "response": "r", "output": "o"}', "both 'response' and 'output'"),
        ('{"question": "q", "answer": "a"}', "no training example: expected prompt/completion"),
        ('{"prompt": "p", "completion": "c", "messages": []}', "mixes the shapes"),
        ('{"messages": "hi"}', "'messages' must be a list, not a string"),
        ('{"messages": []}', "'messages' is empty"),
        ('{"messages": ["hi"]}', "messages[0] must be an object with role and content"),
        (
            '{"messages": [{"role": "bot", "content": "x"}]}',
            "messages[0].role must be one of system, user, assistant, not 'bot'",
        ),
        (
            '{"messages": [{"role": "user", "content": 1}]}',
            "messages[0].content must be a string, not a number",
        ),
        ('{"messages": [{"role": "user", "content": "q"}]}', "'messages' has no assistant turn"),
        (
            '{"messages": [{"role": "user", "content": "q"}, '
            '{"role": "assistant", "content": ""}]}',
            "messages[1].content is empty",
        ),
    ],
)
def test_a_bad_line_is_refused_with_its_number_and_reason(line: str, reason: str) -> None:
    """Each kind of bad line refuses the dataset, and the message names the line and why."""
    with pytest.raises(TrainerError) as raised:
        parse_dataset(jsonl(GOOD_LINE, GOOD_LINE, line, GOOD_LINE))
    assert raised.value.code == DATASET_INVALID
    assert "the dataset has 1 bad line: line 3: " in raised.value.message
    assert reason in raised.value.message


def test_bytes_that_are_not_utf8_are_refused_with_the_line_number() -> None:
    """A line that is not UTF-8 is named as such."""
    with pytest.raises(TrainerError) as raised:
        parse_dataset(jsonl(GOOD_LINE) + b'{"prompt": "\xff\xfe", "completion": "c"}\n')
    assert "line 2: not UTF-8 text" in raised.value.message


def test_many_bad_lines_are_counted_and_the_first_ten_named() -> None:
    """All bad lines are counted; the message names the first ten and says how many more."""
    lines = [GOOD_LINE if i % 2 else "oops" for i in range(30)]
    with pytest.raises(TrainerError) as raised:
        parse_dataset(jsonl(*lines))
    message = raised.value.message
    assert message.startswith("the dataset has 15 bad lines: line 1: not JSON")
    assert "line 19: not JSON" in message
    assert "line 21:" not in message
    assert message.endswith("(and 5 more bad lines)")


def test_blank_lines_are_skipped_but_still_counted_in_line_numbers() -> None:
    """Blank lines (and a BOM, and CRLF ends) are not examples, yet a later bad line keeps its
    number in the file."""
    data = b"\xef\xbb\xbf" + GOOD_LINE.encode() + b"\r\n\n   \n" + b"nope\n"
    with pytest.raises(TrainerError) as raised:
        parse_dataset(data)
    assert "line 4: not JSON" in raised.value.message
    assert len(parse_dataset(data.replace(b"nope", b""))) == 1


def test_a_dataset_with_no_example_is_refused() -> None:
    """An empty file is refused as holding no example."""
    with pytest.raises(TrainerError, match="holds no example"):
        parse_dataset(b"\n\n")


def _learnt(tokenizer: Any, tokenized: TokenizedExample) -> str:
    ids = [i for i, label in zip(tokenized.input_ids, tokenized.labels, strict=True) if label >= 0]
    return str(tokenizer.decode(ids))


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from trainer.model import load_tokenizer

    return load_tokenizer(str(tiny_model))


def test_only_the_answer_is_learnt_through_the_chat_template(tokenizer: Any) -> None:
    """With a chat template, the prompt (and the template's markup before the answer) is masked
    with -100; the answer and the end-of-turn token that closes it are the labels."""
    example = Example((Message("user", "Spell lora backwards"), Message("assistant", "arol")), 1)
    tokenized = tokenize_example(tokenizer, example, 128)
    assert tokenized is not None
    assert tokenizer.decode(tokenized.input_ids).startswith("<|bos|><|user|>\nSpell lora")
    assert _learnt(tokenizer, tokenized) == "arol<|eos|>\n"
    first_label = next(i for i, label in enumerate(tokenized.labels) if label != IGNORE_INDEX)
    assert tokenizer.decode(tokenized.input_ids[:first_label]).endswith("<|assistant|>\n")


def test_every_assistant_turn_of_a_conversation_is_learnt(tokenizer: Any) -> None:
    """In a conversation, each assistant turn is a label and the system and user turns are
    not."""
    turns = (
        Message("system", "be brief"),
        Message("user", "one"),
        Message("assistant", "first"),
        Message("user", "two"),
        Message("assistant", "second"),
    )
    tokenized = tokenize_example(tokenizer, Example(turns, 1), 256)
    assert tokenized is not None
    assert _learnt(tokenizer, tokenized) == "first<|eos|>\nsecond<|eos|>\n"


def test_without_a_chat_template_the_answer_and_eos_are_learnt(tokenizer: Any) -> None:
    """A tokenizer without a chat template gets the prompt and answer on their own lines, and
    learns the answer followed by EOS."""
    template, tokenizer.chat_template = tokenizer.chat_template, None
    try:
        example = Example((Message("user", "Hi"), Message("assistant", "Hello")), 1)
        tokenized = tokenize_example(tokenizer, example, 64)
        assert tokenized is not None
        assert tokenizer.decode(tokenized.input_ids) == "Hi\nHello<|eos|>"
        assert _learnt(tokenizer, tokenized) == "Hello<|eos|>"
    finally:
        tokenizer.chat_template = template


def test_an_example_cut_before_its_answer_is_dropped(tokenizer: Any) -> None:
    """max_seq_length cuts long examples; one with no answer token left is dropped."""
    example = Example((Message("user", "word " * 100), Message("assistant", "yes")), 1)
    assert tokenize_example(tokenizer, example, 16) is None
    kept = tokenize_example(tokenizer, example, 512)
    assert kept is not None
    assert len(kept.input_ids) > 16


def test_the_validation_split_is_seeded_disjoint_and_never_empty() -> None:
    """The same seed gives the same split; the two parts are disjoint; at least one example
    validates and at least one trains."""
    examples = [TokenizedExample([i, i], [i, i]) for i in range(50)]
    training, validation = split(examples, fraction=0.1, max_validation=512, seed=3)
    assert len(validation) == 5
    assert len(training) == 45
    assert split(examples, fraction=0.1, max_validation=512, seed=3) == (training, validation)
    assert not {id(e) for e in training} & {id(e) for e in validation}
    two = examples[:2]
    assert [len(part) for part in split(two, fraction=0.1, max_validation=9, seed=1)] == [1, 1]
    with pytest.raises(TrainerError, match="at least 2 are needed"):
        split(examples[:1], fraction=0.1, max_validation=9, seed=1)


def test_a_dataset_over_the_size_limit_is_refused(datasets: DatasetServer) -> None:
    """A download larger than max_dataset_bytes is refused as dataset_invalid."""
    url = datasets.publish(b"x" * 5000)
    with pytest.raises(TrainerError) as raised:
        download_dataset(url, max_bytes=4096)
    assert raised.value.code == DATASET_INVALID
    assert "larger than the limit of 4096 bytes" in raised.value.message
    assert download_dataset(url, max_bytes=5000) == b"x" * 5000


@pytest.mark.parametrize(("status", "attempts"), [(403, 1), (404, 1), (503, 3)])
def test_a_dataset_url_that_fails_is_dataset_unavailable_without_the_url(
    datasets: DatasetServer, status: int, attempts: int
) -> None:
    """An error answer fails the download (5xx after retries), and the message does not repeat
    the signed URL."""
    url = datasets.publish(b"nope", status=status)
    with pytest.raises(TrainerError) as raised:
        download_dataset(url, max_bytes=1000, backoff_seconds=0.01)
    assert raised.value.code == DATASET_UNAVAILABLE
    assert f"HTTP {status}" in raised.value.message
    assert "token=signed" not in raised.value.message
    if attempts > 1:
        assert "after 3 attempts" in raised.value.message


def test_a_run_on_a_bad_dataset_fails_before_loading_the_model(datasets: DatasetServer) -> None:
    """The trainer refuses a bad dataset with dataset_invalid and the line, before it loads
    the model (here one that does not exist) and before any started event; exit code 1."""
    url = datasets.publish(jsonl(GOOD_LINE, GOOD_LINE, '{"prompt": "p", "completion": 7}'))
    run = run_in_process(make_spec(url, "/nonexistent/model"))
    assert run.returncode == EXIT_FAILED
    assert not run.of_type(StartedEvent)
    failure = run.failure
    assert isinstance(failure, FailedEvent)
    assert failure.code == DATASET_INVALID
    assert "line 3: 'completion' must be a string, not a number" in failure.message
