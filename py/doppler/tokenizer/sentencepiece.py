"""SentencePiece-style BPE: merge the adjacent pair whose joined piece scores highest.

This is how llama.cpp applies a GGUF ``llama`` tokenizer (Gemma, Llama 2): whitespace is
escaped to ``▁`` by the normaliser, there is no pre-tokenizer, and characters without a
piece fall back to ``<0xXX>`` byte pieces.
"""

from __future__ import annotations

import re

from .bpe import WordEncoder
from .merge import merge_pairs

SPACE = "\u2581"


class SentencePiece(WordEncoder):
    """Score-driven merging over whole runs of text, cut where no piece can cross."""

    def __init__(
        self, vocab: dict[str, int], scores: list[float], *, byte_fallback: bool, unk_id: int | None
    ) -> None:
        super().__init__(vocab, unk_id, byte_fallback)
        # Lower priority merges first: negate scores. A piece's score is that of the id the
        # vocab maps it to (the last one, if a text repeats).
        self.priority = {piece: -scores[i] for piece, i in vocab.items()}
        self._boundaries = _boundary_regex(vocab)

    def encode_text(self, text: str) -> list[int]:
        """Encode normalised text; each segment is merged (and cached) independently."""
        return self.encode_words(filter(None, self._boundaries.split(text)))

    def _encode(self, segment: str) -> list[int]:
        get = self.priority.get
        return self.ids_for(merge_pairs(list(segment), lambda a, b: get(a + b)))


def _boundary_regex(vocab: dict[str, int]) -> re.Pattern[str]:
    """Split before each run of ``▁``, unless a piece contains that character followed by ``▁``.

    A merge across the cut would create a piece containing ``x▁`` (x being the character
    before the cut); when no piece does, the segments merge independently and the result is
    identical to merging the whole text, while word-sized segments make caching effective.
    """
    unsafe = set()
    for piece in vocab:
        body = piece.lstrip(SPACE) if SPACE in piece else ""
        if SPACE in body:
            unsafe.update(body[k - 1] for k in range(1, len(body)) if body[k] == SPACE)
    unsafe.discard(SPACE)
    chars = "".join(re.escape(c) for c in sorted(unsafe))
    return re.compile(f"(?<=[^{SPACE}{chars}])(?={SPACE})")
