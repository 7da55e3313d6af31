"""Subsentence segmentation of response token ids (vectorised, table built once per tokenizer).

A *subsentence* is a maximal run of valid response tokens that ends at a delimiter token (the
delimiter belongs to the run it closes) or at the end of the response. Segment ids are contiguous
from 0 in each response; padding (``response_mask == False``) gets -1.

Rules (our reading of the paper; ``docs/sspo.md`` gives the account):

* A token is a *delimiter* when its decoded text, with trailing spaces and tabs stripped, ends in one
  of the delimiters (default :data:`DEFAULT_DELIMITERS`). Trailing spaces are stripped so that a
  token such as ``". "`` still closes its clause; newlines are not stripped because the newline is a
  delimiter itself. Qwen's BPE merges punctuation with newlines (``".\\n\\n"``) and with ``$``
  (``"$."``): both end in a delimiter.
* Numbers do not split: a ``.`` or ``,`` token whose previous token ends with a digit and whose next
  token starts with a digit (``3.14``, ``1,000``; Qwen tokenises every digit separately) is not a
  delimiter; the same holds for a token such as ``"3."`` (digit then punctuation, for tokenizers that
  merge them) followed by a digit. ``"1, 2"`` still splits: the next token is ``" 2"`` (leading space).
* LaTeX math is treated like any other text: punctuation inside ``$...$`` or ``\\[...\\]`` splits.
  Why: a subsentence is a credit-assignment unit, not a linguistic one; tracking math spans would need
  per-tokenizer handling of ``$``, ``\\(``, ``\\[`` merged into arbitrary tokens, for little gain.
  Long runs without punctuation (formulas) can be capped with ``max_subsentence_len``.
* Limitation: a full-width delimiter whose UTF-8 bytes are split across two tokens is not detected
  (each token decodes to a replacement character). Qwen2.5 has whole tokens for all defaults.

Everything after the table build is tensor code: no Python loop over tokens or samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_DELIMITERS",
    "SubsentenceSegmenter",
    "check_max_subsentence_len",
    "segment_ids_from_delimiters",
    "validate_delimiters",
]

#: Half-width ``, . ; : ! ?``, newline, and full-width ``， 。 ； ： ！ ？ 、``.
DEFAULT_DELIMITERS: tuple[str, ...] = (
    ",",
    ".",
    ";",
    ":",
    "!",
    "?",
    "\n",
    "，",
    "。",
    "；",
    "：",
    "！",
    "？",
    "、",
)

# Punctuation that may sit inside a number (decimal point, thousands separator).
_NUMBER_PUNCTUATION = (".", ",")
_DIGITS = "0123456789"


def validate_delimiters(delimiters: Sequence[str] | None, key: str = "delimiters") -> tuple[str, ...]:
    """Return the delimiters as a tuple (``None`` -> :data:`DEFAULT_DELIMITERS`) or raise ValueError naming ``key``."""
    if delimiters is None:
        return DEFAULT_DELIMITERS
    if isinstance(delimiters, (str, bytes)) or not isinstance(delimiters, Sequence):
        raise ValueError(
            f"{key} must be a list of non-empty strings such as [',', '.', '\\n'], got {delimiters!r}"
        )
    out = tuple(delimiters)
    if not out:
        raise ValueError(f"{key} is an empty list: give at least one delimiter, or null for the defaults")
    for d in out:
        if not isinstance(d, str) or d == "" or d.strip(" \t") == "":
            raise ValueError(
                f"{key} contains {d!r}: each delimiter must be a non-empty string that is not only spaces/tabs"
            )
    return out


def check_max_subsentence_len(max_subsentence_len: int | None, key: str = "max_subsentence_len") -> None:
    """Raise ValueError naming ``key`` unless ``max_subsentence_len`` is None or a positive integer."""
    m = max_subsentence_len
    if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
        raise ValueError(f"{key} must be a positive integer or null, got {m!r}")


def segment_ids_from_delimiters(
    is_delimiter: torch.Tensor,
    response_mask: torch.Tensor,
    max_subsentence_len: int | None = None,
) -> torch.Tensor:
    """Turn a per-token "closes a subsentence" mask into per-token subsentence ids.

    Args:
        is_delimiter: BoolTensor[B, T], True where the token closes its subsentence.
        response_mask: BoolTensor[B, T], True on valid response tokens (holes allowed, e.g. tool output).
        max_subsentence_len: if set, a run longer than this is cut into pieces of this many valid tokens.

    Returns:
        LongTensor[B, T]: ids contiguous from 0 in each row, -1 where ``response_mask`` is False.
    """
    if is_delimiter.shape != response_mask.shape or is_delimiter.dim() != 2:
        raise ValueError(
            f"is_delimiter {tuple(is_delimiter.shape)} and response_mask {tuple(response_mask.shape)} "
            "must both be (batch, response_len)"
        )
    check_max_subsentence_len(max_subsentence_len)
    valid = response_mask.bool()
    if max_subsentence_len is None:
        return _ids_from_ends((is_delimiter.bool() & valid).to(torch.int8), valid)
    valid_long = valid.long()  # integer arithmetic: much cheaper than boolean/where ops on CPU
    ends = is_delimiter.long() * valid_long  # [B, T] 1 where the token closes a run

    # Capped: position of each valid token inside its (uncapped) run, counted in valid tokens only.
    valid_index = valid_long.cumsum(1) - 1  # [B, T] 0-based index among valid tokens
    end_index = torch.where(ends.bool(), valid_index, -1)
    last_end = end_index.cummax(1).values  # [B, T] valid index of the last end at or before t
    last_end_before = F.pad(last_end[:, :-1], (1, 0), value=-1)  # strictly before t
    pos_in_run = valid_index - last_end_before - 1  # [B, T]
    ends = (ends.bool() | (valid & ((pos_in_run + 1) % max_subsentence_len == 0))).long()

    seg = ends.cumsum(1)  # in-place below: fewer large allocations
    seg -= ends  # [B, T] number of run ends strictly before t
    seg += 1
    seg *= valid_long
    seg -= 1  # -1 on padding
    return seg


def _ids_from_ends(ends: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """LongTensor[B, T] ids from ``ends`` (Int8Tensor[B, T], 1 where a valid token closes its run, 0 elsewhere and
    on padding) and ``valid`` (BoolTensor[B, T]): the number of run ends strictly before each token, -1 on padding.
    One int8 shift, one cumsum straight to int64, one masked fill (fewer int64 passes: they dominate the time).
    """
    if ends.shape[1] == 0:
        return ends.long()
    before = F.pad(ends[:, :-1], (1, 0))  # [B, T] 1 where the PREVIOUS token closed a run
    return before.cumsum(1, dtype=torch.long).masked_fill_(~valid, -1)


class SubsentenceSegmenter:
    """Callable ``(responses[B, T], response_mask[B, T]) -> segment_ids[B, T]`` built from a vocabulary table.

    Build it once with :meth:`from_tokenizer`; calls are pure tensor lookups and cumsums, on the device
    of ``responses`` (the tables move there lazily, once per device).
    """

    def __init__(
        self,
        is_delimiter: torch.Tensor,
        is_number_punct: torch.Tensor,
        is_digit_punct: torch.Tensor,
        ends_with_digit: torch.Tensor,
        starts_with_digit: torch.Tensor,
        max_subsentence_len: int | None = None,
        delimiters: Sequence[str] = DEFAULT_DELIMITERS,
    ) -> None:
        """Store the per-token-id tables (BoolTensor[V + 1] each; the last entry is an always-False
        sentinel used for ids outside the vocabulary).

        ``is_number_punct``: the token is exactly ``.`` or ``,``; ``is_digit_punct``: digit then ``.``/``,``
        at the end of the token (``"3."``); ``ends_with_digit`` / ``starts_with_digit``: first/last character.
        """
        check_max_subsentence_len(max_subsentence_len)
        self.vocab_size = int(is_delimiter.numel()) - 1
        self.max_subsentence_len = max_subsentence_len
        self.delimiters = tuple(delimiters)
        # One int8 table of bit flags: one gather per call instead of five.
        self._flags = (
            is_delimiter.to(torch.int8)
            | (is_number_punct.to(torch.int8) << 1)
            | (is_digit_punct.to(torch.int8) << 2)
            | (ends_with_digit.to(torch.int8) << 3)
            | (starts_with_digit.to(torch.int8) << 4)
        )

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer,
        delimiters: Sequence[str] | None = None,
        max_subsentence_len: int | None = None,
    ) -> SubsentenceSegmenter:
        """Decode every token id of ``tokenizer`` once (``batch_decode``: about 1 s for Qwen2.5's 151k ids)
        and build the lookup tables.

        Args:
            tokenizer: a Hugging Face tokenizer (anything with ``batch_decode`` and ``len()``).
            delimiters: strings that close a subsentence; None = :data:`DEFAULT_DELIMITERS`.
            max_subsentence_len: optional cap on the number of tokens per subsentence.
        """
        delims = validate_delimiters(delimiters)
        vocab_size = len(tokenizer)
        texts = tokenizer.batch_decode(
            [[i] for i in range(vocab_size)], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        is_delim = [t.rstrip(" \t").endswith(delims) for t in texts]
        is_num_punct = [t in _NUMBER_PUNCTUATION for t in texts]
        # "3." (digit + punctuation in one token, for tokenizers that merge them) carries its own digit.
        is_digit_punct = [len(t) >= 2 and t[-1] in _NUMBER_PUNCTUATION and t[-2] in _DIGITS for t in texts]
        ends_digit = [t[-1:] in _DIGITS and t != "" for t in texts]
        starts_digit = [t[:1] in _DIGITS and t != "" for t in texts]

        def table(values: list[bool]) -> torch.Tensor:
            return torch.tensor(values + [False], dtype=torch.bool)  # + out-of-vocabulary sentinel

        return cls(
            table(is_delim),
            table(is_num_punct),
            table(is_digit_punct),
            table(ends_digit),
            table(starts_digit),
            max_subsentence_len=max_subsentence_len,
            delimiters=delims,
        )

    def delimiter_mask(self, responses: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """BoolTensor[B, T]: True where a valid token closes its subsentence (number rule applied)."""
        return self._ends(responses, response_mask).bool()

    def _ends(self, responses: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """Int8Tensor[B, T]: 1 where a valid token closes its subsentence, 0 elsewhere (padding included)."""
        if responses.dim() != 2 or responses.shape != response_mask.shape:
            raise ValueError(
                f"responses {tuple(responses.shape)} and response_mask {tuple(response_mask.shape)} "
                "must both be (batch, response_len)"
            )
        if self._flags.device != responses.device:
            self._flags = self._flags.to(responses.device)
        B, T = responses.shape
        ids = responses.long().clamp(0, self.vocab_size)  # out-of-vocabulary ids -> sentinel (no flags)
        # Padding gets no flags (int8 arithmetic: much cheaper than boolean/where ops on CPU).
        flags = self._flags.index_select(0, ids.reshape(-1)).view(B, T) * response_mask.to(torch.int8)
        # Neighbours' flags: padding has none, so the first/last tokens see 0 beyond the edges.
        prev = F.pad(flags[:, :-1], (1, 0))  # [B, T]
        nxt = F.pad(flags[:, 1:], (0, 1))  # [B, T]
        # Number rule on bit 1 (bits: 0 delimiter, 1 "."/",", 2 "3.", 3 ends with a digit, 4 starts with one):
        # ("."/"," after a digit, or a merged "3.") followed by a digit sits inside a number.
        inside_number = (prev >> 2).bitwise_and_(flags).bitwise_or_(flags >> 1).bitwise_and_(nxt >> 3)
        return (inside_number >> 1).bitwise_not_().bitwise_and_(flags).bitwise_and_(1)  # delimiter not inside

    def __call__(self, responses: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """LongTensor[B, T] subsentence ids, contiguous from 0 in each response, -1 on padding."""
        if self.max_subsentence_len is not None:
            return segment_ids_from_delimiters(
                self.delimiter_mask(responses, response_mask), response_mask, self.max_subsentence_len
            )
        return _ids_from_ends(self._ends(responses, response_mask), response_mask.bool())
