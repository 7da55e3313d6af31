"""A tiny Qwen2 model and a small byte-level BPE tokenizer, built offline in about a second.

Used by the tests and the CPU demo: nothing is downloaded. The tokenizer uses Qwen2's own
pre-tokenizer pattern (digits split one by one, punctuation merged with following newlines such as
``".\\n\\n"``) so segmentation sees the same kind of tokens as with the real Qwen2.5 vocabulary.
CPU cost is dominated by the vocabulary: keep ``vocab_size`` small.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Qwen2's pre-tokenizer split pattern (from its tokenizer.json).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def default_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Short math-flavoured texts with punctuation, numbers, LaTeX and ``\\boxed{}`` answers."""
    rng = random.Random(seed)
    words = "the answer is so we add subtract multiply divide first then next finally sum of and to get".split()
    texts = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        filler = " ".join(rng.choice(words) for _ in range(rng.randint(2, 8)))
        texts.append(
            f"What is {a} + {b}? First, {filler}. Then {a} + {b} = {a + b}; so, the answer: "
            f"$\\boxed{{{a + b}}}$!\n\nCheck: {a}.{b} and {a},{b:03d}, {filler}?\n"
        )
    return texts


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 384) -> Any:
    """Train a byte-level BPE tokenizer (Qwen2 pre-tokenizer, ChatML template) on ``corpus``.

    Returns a ``transformers.PreTrainedTokenizerFast`` with ``<|im_end|>`` as EOS and
    ``<|endoftext|>`` as padding, like Qwen2.5.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus) if corpus is not None else default_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer: Any, hidden_size: int = 64, num_layers: int = 2, seed: int = 0, **config_overrides: Any) -> Any:
    """A randomly initialised ``Qwen2ForCausalLM`` sized for ``tokenizer`` (about 0.1M parameters)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="eager",
        **config_overrides,
    )
    return Qwen2ForCausalLM(config)


def save_tiny_model(path: str | Path, corpus: Iterable[str] | None = None, vocab_size: int = 384, **model_kwargs) -> Path:
    """Build the tokenizer and model and save both to ``path`` (loadable by verl as ``model.path``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(corpus, vocab_size=vocab_size)
    model = build_model(tokenizer, **model_kwargs)
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path
