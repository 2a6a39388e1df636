"""Split added/special tokens out of text before the model sees it.

Matching is leftmost-longest on the raw text, as HF tokenizers does; llama.cpp's
longest-token-first partition gives the same result unless two added tokens overlap
partially, which none of the supported vocabularies have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class AddedToken:
    id: int
    content: str
    special: bool = True
    lstrip: bool = False
    rstrip: bool = False


class AddedTokenSplitter:
    """Finds added tokens in text; ``split`` yields text pieces and token ids in order."""

    def __init__(self, tokens: list[AddedToken]) -> None:
        self._by_text = {t.content: t for t in tokens if t.content}
        lengths: dict[str, set[int]] = {}
        for text in self._by_text:
            lengths.setdefault(text[0], set()).add(len(text))
        # Per first character, the candidate lengths longest first.
        self._lengths = {c: sorted(ls, reverse=True) for c, ls in lengths.items()}
        firsts = "".join(re.escape(c) for c in sorted(self._lengths))
        self._first = re.compile(f"[{firsts}]") if firsts else None

    def split(self, text: str) -> list[str | int]:
        if self._first is None:
            return [text] if text else []
        out: list[str | int] = []
        start = 0  # start of the pending text
        pos = 0
        while True:
            m = self._first.search(text, pos)
            if m is None:
                break
            at = m.start()
            token = self._match_at(text, at)
            if token is None:
                pos = at + 1
                continue
            end = at + len(token.content)
            left = text[start:at]
            if token.lstrip:
                left = left.rstrip()
            if left:
                out.append(left)
            out.append(token.id)
            if token.rstrip:
                while end < len(text) and text[end].isspace():
                    end += 1
            start = pos = end
        if start < len(text):
            out.append(text[start:])
        return out

    def _match_at(self, text: str, at: int) -> AddedToken | None:
        for length in self._lengths[text[at]]:
            token = self._by_text.get(text[at : at + length])
            if token is not None:
                return token
        return None
