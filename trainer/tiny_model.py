"""A tiny causal language model and its tokenizer, built here, for tests and ``make dev``.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on a few built-in lines, the
model a small Llama with random weights. Both are saved with ``save_pretrained`` into one
directory, so the trainer loads them through the very same ``from_pretrained`` path as a real
model from the Hugging Face Hub. The same seed builds the same files.

    python -m trainer.tiny_model OUT_DIR [--seed 0] [--hidden-size 64] [--layers 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

BOS: Final = "<|bos|>"
EOS: Final = "<|eos|>"
PAD: Final = "<|pad|>"
ROLES: Final = ("system", "user", "assistant")
SPECIAL_TOKENS: Final = [PAD, BOS, EOS, *(f"<|{role}|>" for role in ROLES)]

# A chat template in the usual shape: each turn opens with its role's token and ends with EOS,
# and the prompt for a reply ends with the assistant's opening token.
CHAT_TEMPLATE: Final = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

DEFAULT_VOCAB_SIZE: Final = 512


def _corpus() -> list[str]:
    """The lines the tokenizer's merges are learnt from: enough English, digits and punctuation
    for the demo datasets to come out in a few tokens a word."""
    words = [
        "adapter",
        "gradient",
        "tensor",
        "epoch",
        "optimizer",
        "dataset",
        "lora",
        "rank",
        "question",
        "answer",
        "prompt",
        "completion",
    ]
    lines = [
        "The quick brown fox jumps over the lazy dog.",
        "What is the answer to this question? Please answer in one sentence.",
        "Convert the temperature to Fahrenheit. Sort these numbers in ascending order.",
        "Spell the word backwards. What is it multiplied by? times is spelled",
        "You are a helpful assistant for customers. Thank you for your message!",
    ]
    for i in range(200):
        word = words[i % len(words)]
        lines.append(f"{word} {i} {i * 7 % 120 - 20} °C is {i * 9 / 5 + 32:.1f} °F.")
        lines.append(f"'{word}' spelled backwards is '{word[::-1]}'. {i} times {i + 3}.")
    return lines


def build_tokenizer(vocab_size: int = DEFAULT_VOCAB_SIZE) -> object:
    """A byte-level BPE tokenizer with BOS/EOS/PAD, role tokens and a chat template, as a
    ``PreTrainedTokenizerFast``. Any text encodes: unknown words fall back to bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    bpe_trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus(), bpe_trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def build(
    out_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 1024,
) -> Path:
    """Write a tiny Llama and its tokenizer into ``out_dir`` (created); return the directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(out)  # type: ignore[attr-defined]
    config = LlamaConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
        eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
        pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.tiny_model",
        description="Build a tiny random Llama and a byte-level tokenizer into OUT_DIR.",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    args = parser.parse_args(argv)
    out = build(
        args.out_dir,
        seed=args.seed,
        hidden_size=args.hidden_size,
        layers=args.layers,
        heads=args.heads,
    )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
