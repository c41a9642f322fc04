"""The tiny model that tests and ``make dev`` train: built locally, the same for a seed, and
loaded through the same from_pretrained path as a real model."""

from __future__ import annotations

from pathlib import Path

from trainer.tiny_model import build, main


def test_the_same_seed_builds_the_same_files(tmp_path: Path) -> None:
    """Two builds with one seed write byte-identical files; another seed other weights."""
    first = build(tmp_path / "a", seed=1)
    second = build(tmp_path / "b", seed=1)
    names = sorted(p.name for p in first.iterdir())
    assert "model.safetensors" in names
    assert "tokenizer.json" in names
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    other = build(tmp_path / "c", seed=2)
    assert (other / "model.safetensors").read_bytes() != (first / "model.safetensors").read_bytes()


def test_it_loads_with_the_auto_classes_and_has_a_chat_template(tiny_model: Path) -> None:
    """AutoTokenizer and AutoModelForCausalLM load the folder; the tokenizer encodes any text
    (bytes as the fallback) and renders chats."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    text = "Zürich → 東京 🚆"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|bos|><|user|>\nhi<|eos|>\n<|assistant|>\n"
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.num_hidden_layers == 2


def test_the_command_writes_the_folder(tmp_path: Path, capsys: object) -> None:
    """python -m trainer.tiny_model OUT_DIR writes a loadable model folder."""
    assert main([str(tmp_path / "out"), "--hidden-size", "32", "--heads", "2"]) == 0
    assert (tmp_path / "out" / "config.json").is_file()
