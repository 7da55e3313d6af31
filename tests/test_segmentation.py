"""Subsentence segmentation: pure-tensor ids, the real Qwen2.5 tokenizer on MATH500, the tiny tokenizer."""

from __future__ import annotations

import json
import random

import pytest
import torch

from sspo.segmentation import (
    DEFAULT_DELIMITERS,
    SubsentenceSegmenter,
    segment_ids_from_delimiters,
    validate_delimiters,
)

# ----------------------------------------------------------------------------------------------
# Loop references, written for clarity
# ----------------------------------------------------------------------------------------------


def reference_ids_from_delimiters(is_delim: list[bool], valid: list[bool], cap: int | None) -> list[int]:
    """One row: walk the tokens, start a new run after a delimiter or after `cap` tokens."""
    ids, seg, run = [], 0, 0
    for d, v in zip(is_delim, valid, strict=True):
        if not v:
            ids.append(-1)
            continue
        ids.append(seg)
        run += 1
        if d or (cap is not None and run == cap):
            seg, run = seg + 1, 0
    return ids


def reference_segment(
    texts: list[str], valid: list[bool], delimiters=DEFAULT_DELIMITERS, cap=None
) -> list[int]:
    """One row from decoded token texts, with the documented rules spelled out token by token."""
    digits = "0123456789"
    is_delim = []
    for t, text in enumerate(texts):
        closes = valid[t] and text.rstrip(" \t").endswith(tuple(delimiters))
        prev_text = texts[t - 1] if t > 0 and valid[t - 1] else ""
        next_text = texts[t + 1] if t + 1 < len(texts) and valid[t + 1] else ""
        next_digit = next_text[:1] != "" and next_text[0] in digits
        lone_in_number = (
            text in (".", ",") and prev_text[-1:] != "" and prev_text[-1] in digits and next_digit
        )
        merged_in_number = len(text) >= 2 and text[-1] in ".," and text[-2] in digits and next_digit
        is_delim.append(closes and not (lone_in_number or merged_in_number))
    return reference_ids_from_delimiters(is_delim, valid, cap)


def encode_batch(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """Right-padded ids (pad id 0: padding must never matter) and the mask."""
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    T = max(len(r) for r in rows) + 3  # always some padding
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = True
    return ids, mask, rows


def segments_text(tokenizer, row: list[int], seg_row: list[int]) -> list[str]:
    n = max(seg_row) + 1
    return [tokenizer.decode([t for t, s in zip(row, seg_row, strict=False) if s == k]) for k in range(n)]


# ----------------------------------------------------------------------------------------------
# Pure tensor function
# ----------------------------------------------------------------------------------------------


def test_ids_from_delimiters_by_hand():
    d = torch.tensor([[0, 1, 0, 0, 1, 0, 0], [1, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    m = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    ids = segment_ids_from_delimiters(d, m)
    # The delimiter closes its run; a delimiter on the last valid token opens no empty run; empty row is all -1.
    assert ids.tolist() == [[0, 0, 1, 1, 1, 2, -1], [0, 1, 1, -1, -1, -1, -1], [-1] * 7]
    capped = segment_ids_from_delimiters(d, m, max_subsentence_len=2)
    assert capped.tolist() == [[0, 0, 1, 1, 2, 3, -1], [0, 1, 1, -1, -1, -1, -1], [-1] * 7]


def test_ids_from_delimiters_ignore_delimiters_on_padding_and_allow_holes():
    # A hole in the mask (e.g. tool output in a multi-turn response) belongs to no run; a delimiter there is ignored.
    d = torch.tensor([[0, 0, 1, 0, 0, 1]], dtype=torch.bool)
    m = torch.tensor([[1, 1, 0, 1, 1, 1]], dtype=torch.bool)
    assert segment_ids_from_delimiters(d, m).tolist() == [[0, 0, -1, 0, 0, 0]]


@pytest.mark.parametrize("cap", [None, 1, 3, 7])
def test_ids_from_delimiters_match_loop_reference_on_random_masks(cap):
    g = torch.Generator().manual_seed(cap or 0)
    B, T = 16, 40
    d = torch.rand(B, T, generator=g) < 0.2
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    m = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    m &= torch.rand(B, T, generator=g) > 0.1  # holes
    ids = segment_ids_from_delimiters(d, m, max_subsentence_len=cap)
    for b in range(B):
        assert ids[b].tolist() == reference_ids_from_delimiters(d[b].tolist(), m[b].tolist(), cap), b


def test_ids_from_delimiters_validates():
    with pytest.raises(ValueError, match="response_mask"):
        segment_ids_from_delimiters(torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_subsentence_len"):
        segment_ids_from_delimiters(
            torch.zeros(2, 3, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool), 0
        )


@pytest.mark.parametrize("cap", [0, -1, 2.5, True])
def test_bad_cap_rejected_when_the_segmenter_is_built(tiny_tokenizer, cap):
    """At construction, not at the first call inside a training step."""
    with pytest.raises(ValueError, match=f"max_subsentence_len must be .* got {cap!r}"):
        SubsentenceSegmenter.from_tokenizer(tiny_tokenizer, max_subsentence_len=cap)


@pytest.mark.parametrize("bad", ["abc", [], [""], ["  "], [",", 3]])
def test_bad_delimiter_spec_is_named(bad):
    with pytest.raises(ValueError, match="my.key"):
        validate_delimiters(bad, key="my.key")


def test_default_delimiters():
    assert set(",.;:!?\n，。；：！？、") == set(DEFAULT_DELIMITERS)


# ----------------------------------------------------------------------------------------------
# Real Qwen2.5 tokenizer
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_seg(qwen_tokenizer) -> SubsentenceSegmenter:
    return SubsentenceSegmenter.from_tokenizer(qwen_tokenizer)


@pytest.fixture(scope="module")
def math500_solutions(shared_data) -> list[str]:
    path = shared_data / "benchmarks" / "qwen_eval" / "math500.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    solutions = [r["solution"] for r in rows]
    random.Random(0).shuffle(solutions)
    return solutions[:40]


def _split_cases() -> list[tuple[str, list[str]]]:
    return [
        ("Pi is 3.14 and 1,000 is big.", ["Pi is 3.14 and 1,000 is big."]),
        ("Take 1, 2 and 3. Done", ["Take 1,", " 2 and 3.", " Done"]),
        ("First line\nSecond: yes!\n\nThird?", ["First line\n", "Second:", " yes!\n\n", "Third?"]),
        # LaTeX is treated as text: the comma inside $...$ splits; "$." closes the run.
        ("So $x=1, y$. Next", ["So $x=1,", " y$.", " Next"]),
        ("你好，世界。再见、朋友", ["你好，", "世界。", "再见、", "朋友"]),
        ("x=0.5, y=2.", ["x=0.5,", " y=2."]),
    ]


@pytest.mark.parametrize("text,expected", _split_cases())
def test_qwen_examples(qwen_tokenizer, qwen_seg, text, expected):
    ids, mask, rows = encode_batch(qwen_tokenizer, [text])
    seg = qwen_seg(ids, mask)
    assert segments_text(qwen_tokenizer, rows[0], seg[0].tolist()[: len(rows[0])]) == expected
    assert (seg[0, len(rows[0]) :] == -1).all()


def test_qwen_math500_matches_loop_reference_and_rules(qwen_tokenizer, qwen_seg, math500_solutions):
    ids, mask, rows = encode_batch(qwen_tokenizer, math500_solutions)
    seg = qwen_seg(ids, mask)
    total_segments = 0
    for b, row in enumerate(rows):
        seg_row = seg[b].tolist()
        assert all(s == -1 for s in seg_row[len(row) :])
        texts = [qwen_tokenizer.decode([t]) for t in row]
        assert seg_row[: len(row)] == reference_segment(texts, [True] * len(row)), b
        parts = segments_text(qwen_tokenizer, row, seg_row[: len(row)])
        total_segments += len(parts)
        # Concatenating the subsentences gives back the text.
        assert "".join(parts) == qwen_tokenizer.decode(row) == math500_solutions[b]
        for part, nxt in zip(parts[:-1], parts[1:], strict=True):
            assert part.rstrip(" \t").endswith(DEFAULT_DELIMITERS), (part, nxt)
            # Never inside a number: no run ends with "<digit>." or "<digit>," right before a digit.
            assert not (part[-1] in ".," and part[-2:-1].isdigit() and nxt[:1].isdigit()), (part, nxt)
    assert total_segments > 10 * len(rows)  # real solutions have many subsentences


def test_qwen_math500_numbers_exist_and_do_not_split(qwen_tokenizer, qwen_seg, math500_solutions):
    # The data really contains decimals / thousands separators, and they stay inside one run.
    text = next(
        s for s in math500_solutions if any(f"{a}.{b}" in s for a in "0123456789" for b in "0123456789")
    )
    ids, mask, rows = encode_batch(qwen_tokenizer, [text])
    seg = qwen_seg(ids, mask)[0].tolist()
    toks = [qwen_tokenizer.decode([t]) for t in rows[0]]
    found = 0
    for t in range(1, len(toks) - 1):
        if toks[t] == "." and toks[t - 1][-1:].isdigit() and toks[t + 1][:1].isdigit():
            assert seg[t] == seg[t + 1]
            found += 1
    assert found > 0


def test_qwen_cap_and_custom_delimiters(qwen_tokenizer, math500_solutions):
    seg_cap = SubsentenceSegmenter.from_tokenizer(qwen_tokenizer, max_subsentence_len=8)
    ids, mask, rows = encode_batch(qwen_tokenizer, math500_solutions[:8])
    seg = seg_cap(ids, mask)
    for b, row in enumerate(rows):
        texts = [qwen_tokenizer.decode([t]) for t in row]
        assert seg[b, : len(row)].tolist() == reference_segment(texts, [True] * len(row), cap=8)
        counts = torch.bincount(seg[b, : len(row)])
        assert counts.max() <= 8
    only_semicolon = SubsentenceSegmenter.from_tokenizer(qwen_tokenizer, delimiters=[";"])
    ids, mask, rows = encode_batch(qwen_tokenizer, ["a, b; c. d"])
    assert segments_text(qwen_tokenizer, rows[0], only_semicolon(ids, mask)[0, : len(rows[0])].tolist()) == [
        "a, b;",
        " c. d",
    ]


def test_qwen_out_of_vocabulary_ids_and_shape_errors(qwen_tokenizer, qwen_seg):
    # Model vocabularies are padded beyond the tokenizer's (151936 vs 151669): such ids never split.
    ids = torch.tensor([[qwen_seg.vocab_size + 100, qwen_tokenizer.convert_tokens_to_ids("."), 5]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    assert qwen_seg(ids, mask).tolist() == [[0, 0, 1]]
    with pytest.raises(ValueError, match="response_mask"):
        qwen_seg(ids, mask[:, :2])
    with pytest.raises(ValueError, match="delimiters"):
        SubsentenceSegmenter.from_tokenizer(qwen_tokenizer, delimiters=".")


# ----------------------------------------------------------------------------------------------
# Tiny offline tokenizer (a different vocabulary: digits, punctuation and words are separate tokens)
# ----------------------------------------------------------------------------------------------


def test_tiny_tokenizer_matches_reference(tiny_tokenizer, math500_solutions):
    seg = SubsentenceSegmenter.from_tokenizer(tiny_tokenizer)
    assert seg.vocab_size == len(tiny_tokenizer)
    texts = ["x = 3.14, 1,000. Yes!\nNo", *math500_solutions[:6]]
    ids, mask, rows = encode_batch(tiny_tokenizer, texts)
    out = seg(ids, mask)
    for b, row in enumerate(rows):
        toks = [tiny_tokenizer.decode([t]) for t in row]
        assert out[b, : len(row)].tolist() == reference_segment(toks, [True] * len(row)), b
    assert segments_text(tiny_tokenizer, rows[0], out[0, : len(rows[0])].tolist()) == [
        "x = 3.14,",
        " 1,000.",
        " Yes!\n",
        "No",
    ]


def test_the_documented_subsentence_length_on_math500(qwen_tokenizer, shared_data):
    """The figure behind SSPO's default clip range (README, docs/sspo.md, algo/sspo.yaml): per MATH500 reference
    solution, tokens per subsentence with the Qwen2.5 tokenizer -- median 17.8, 10th-90th percentile 9.4-33.8."""
    import json
    import statistics

    segmenter = SubsentenceSegmenter.from_tokenizer(qwen_tokenizer)
    per_solution = []
    for line in (shared_data / "benchmarks" / "qwen_eval" / "math500.jsonl").read_text().splitlines():
        ids = torch.tensor([qwen_tokenizer(json.loads(line)["solution"], add_special_tokens=False)["input_ids"]])
        seg = segmenter(ids, torch.ones_like(ids, dtype=torch.bool))[0]
        per_solution.append(ids.shape[1] / (int(seg.max()) + 1))
    deciles = statistics.quantiles(per_solution, n=10)
    assert len(per_solution) == 500
    assert round(statistics.median(per_solution), 1) == 17.8
    assert (round(deciles[0], 1), round(deciles[-1], 1)) == (9.4, 33.8)
