"""BPE over merge ranks (GPT-2 byte-level, or character-level with byte fallback).

Results are cached per pre-tokenized word: natural text repeats words constantly, and the
merge loop is the slowest part of encoding in Pyodide.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import SpecError
from .merge import merge_pairs

_CACHE_LIMIT = 200_000


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte → printable character table."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


BYTE_ENCODER = _bytes_to_unicode()
BYTE_DECODER = {c: b for b, c in enumerate(BYTE_ENCODER)}


def byte_token(byte: int) -> str:
    """SentencePiece/HF byte-fallback piece for one byte, e.g. ``<0x0A>``."""
    return f"<0x{byte:02X}>"


class WordEncoder:
    """Turns one word (or one segment of text) into ids, memoised."""

    def __init__(self, vocab: dict[str, int], unk_id: int | None, byte_fallback: bool) -> None:
        self.vocab = vocab
        self.unk_id = unk_id
        self.byte_fallback = byte_fallback
        self._cache: dict[str, list[int]] = {}
        missing = [b for b in range(256) if byte_token(b) not in vocab] if byte_fallback else []
        if missing:
            raise SpecError(f"byte_fallback: vocab lacks {byte_token(missing[0])}")

    def encode(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            ids = self._cache[word] = self._encode(word)
        return ids

    def encode_words(self, words: Iterable[str]) -> list[int]:
        """Ids of consecutive words (the hot loop of encoding: cache hits stay inline)."""
        cache = self._cache
        ids: list[int] = []
        for word in words:
            hit = cache.get(word)
            ids += hit if hit is not None else self.encode(word)
        return ids

    def _encode(self, word: str) -> list[int]:
        raise NotImplementedError

    def ids_for(self, symbols: list[str]) -> list[int]:
        """Ids of final symbols; a symbol outside the vocab becomes byte tokens, unk or nothing."""
        vocab = self.vocab
        ids: list[int] = []
        for sym in symbols:
            tid = vocab.get(sym)
            if tid is not None:
                ids.append(tid)
            elif self.byte_fallback:
                ids.extend([vocab[byte_token(b)] for b in sym.encode("utf-8")])
            elif self.unk_id is not None:
                ids.append(self.unk_id)
            # Without either, HF tokenizers and llama.cpp both drop the symbol.
        return ids


class BPE(WordEncoder):
    """Merges by rank; ``byte_level`` maps UTF-8 bytes to GPT-2's characters first."""

    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, str]],
        *,
        byte_level: bool,
        byte_fallback: bool,
        ignore_merges: bool,
        unk_id: int | None,
    ) -> None:
        super().__init__(vocab, unk_id, byte_fallback)
        self.ranks = {pair: rank for rank, pair in reversed(list(enumerate(merges)))}
        self.byte_level = byte_level
        self.ignore_merges = ignore_merges

    def _encode(self, word: str) -> list[int]:
        if self.byte_level:
            word = "".join([BYTE_ENCODER[b] for b in word.encode("utf-8")])
        if self.ignore_merges and word in self.vocab:
            return [self.vocab[word]]
        symbols = list(word)
        if self.byte_fallback and not self.byte_level:
            symbols = self._split_unknown(symbols)
        get = self.ranks.get
        return self.ids_for(merge_pairs(symbols, lambda a, b: get((a, b))))

    def _split_unknown(self, symbols: list[str]) -> list[str]:
        """HF replaces characters outside the vocab by their byte pieces before merging."""
        vocab = self.vocab
        if all(s in vocab for s in symbols):
            return symbols
        out: list[str] = []
        for s in symbols:
            if s in vocab:
                out.append(s)
            else:
                out.extend(byte_token(b) for b in s.encode("utf-8"))
        return out
