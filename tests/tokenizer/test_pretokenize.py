"""Pre-tokenizer regex translation: exact Unicode classes, and splits on known inputs."""

from __future__ import annotations

import re
import sys
import unicodedata

import pytest

from doppler.tokenizer.errors import UnsupportedTokenizerError
from doppler.tokenizer.pretokenize import (
    GGUF_PRESETS,
    PreTokenizer,
    gguf_preset,
    translate,
)

# Every code point except surrogates, which cannot appear in text.
ALL = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000)


@pytest.fixture(scope="module")
def groups() -> dict[str, frozenset[str]]:
    """Characters by major category from ``unicodedata``, and White_Space (Python's isspace
    minus the four separators U+001C..U+001F, which White_Space does not include)."""
    out: dict[str, set[str]] = {"L": set(), "N": set(), "M": set(), "ws": set()}
    for c in ALL:
        major = unicodedata.category(c)[0]
        if major in out:
            out[major].add(c)
        if c.isspace() and c not in "\x1c\x1d\x1e\x1f":
            out["ws"].add(c)
    return {k: frozenset(v) for k, v in out.items()}


# pattern → (negated, groups, literal characters): what the class should match.
CLASSES = {
    r"\p{L}": (False, "L", ""),
    r"\p{N}": (False, "N", ""),
    r"\P{L}": (True, "L", ""),
    r"\P{N}": (True, "N", ""),
    r"[^\s\p{L}\p{N}]": (True, "ws L N", ""),
    r"[^\r\n\p{L}\p{N}]": (True, "L N", "\r\n"),
    r"[\p{L}\p{N}_]": (False, "L N", "_"),
    r"[\p{L}']": (False, "L", "'"),
    r"[^\p{L}x]": (True, "L", "x"),
    r"[\p{N}.]": (False, "N", "."),
    r"[\p{L}\p{M}]": (False, "L M", ""),
    r"\s": (False, "ws", ""),
    r"\S": (True, "ws", ""),
}


def members(pattern: str, groups: dict[str, frozenset[str]]) -> tuple[bool, set[str]]:
    negated, names, literals = CLASSES[pattern]
    return negated, set(literals).union(*(groups[n] for n in names.split()))


def matched_members(regex: re.Pattern[str], negated: bool) -> set[str]:
    """The class members a one-character regex accepts (ALL holds each character once):
    for a negated class, the characters it does not match."""
    return set(regex.sub("", ALL)) if negated else set(regex.findall(ALL))


@pytest.mark.parametrize("pattern", sorted(CLASSES))
def test_classes_match_unicodedata(pattern: str, groups: dict[str, frozenset[str]]) -> None:
    """Every code point, against unicodedata."""
    negated, expected = members(pattern, groups)
    assert matched_members(re.compile(translate(pattern)), negated) == expected


def test_planted_bug_letters_as_word_chars(groups: dict[str, frozenset[str]]) -> None:
    """Taking [^\\W\\d_] for letters (it also holds No/Nl numerics) is caught by the check."""
    _, letters = members(r"\p{L}", groups)
    assert matched_members(re.compile(r"[^\W\d_]"), False) != letters


def test_splits() -> None:
    smollm = PreTokenizer(list(GGUF_PRESETS["smollm"][0]))
    assert smollm.split("Hi 2024, it's  ok\n\n x") == [
        "Hi",
        " ",
        "2",
        "0",
        "2",
        "4",
        ",",
        " it",
        "'s",
        " ",
        " ok",
        "\n\n",
        " x",
    ]
    llama3 = PreTokenizer(list(GGUF_PRESETS["llama3"][0]))
    assert llama3.split("12345 IT'S") == ["123", "45", " IT", "'S"]
    assert PreTokenizer([]).split("a b") == ["a b"]
    assert smollm.split("") == []


def test_gguf_presets() -> None:
    assert gguf_preset("llama-bpe")[0] == "llama3"
    assert gguf_preset("llama-bpe")[2] is True  # ignore_merges
    assert gguf_preset("starcoder")[0] == "smollm"
    with pytest.raises(UnsupportedTokenizerError, match=r"tokenizer\.ggml\.pre"):
        gguf_preset("no-such-model")


def test_unsupported_patterns() -> None:
    with pytest.raises(UnsupportedTokenizerError, match="category"):
        translate(r"\p{Xx}")
    with pytest.raises(UnsupportedTokenizerError, match="unterminated"):
        translate(r"[\p{L}")
    with pytest.raises(UnsupportedTokenizerError, match="class item"):
        translate(r"[^\S]")
    with pytest.raises(UnsupportedTokenizerError, match="bad regex"):
        PreTokenizer(["(unclosed"])
