"""Pre-tokenizers: regex splits that cut text into words before BPE.

Patterns are kept in the Oniguruma/PCRE syntax that tokenizer.json and llama.cpp use and
translated to Python ``re`` once: ``re`` has no ``\\p{..}``, so Unicode categories become
explicit character classes built from the committed table in ``unicode_data``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

from . import unicode_data
from .errors import UnsupportedTokenizerError

# The White_Space property (what Oniguruma and llama.cpp mean by \s); Python's \s also
# matches U+001C..U+001F, which would split differently.
_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
# llama.cpp spells the case-insensitive contractions out: "'" + U+017F (long s) is no
# contraction there, while (?i:'s) matches it.
_CONTRACTIONS_CASED = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_CONTRACTIONS_ICASE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
# HF's ByteLevel(use_regex=True) pattern: GPT-2's plus a trailing "\s+" (same splits).
BYTE_LEVEL = GPT2 + r"|\s+"

# tokenizer.json patterns recognised by name (anything else is kept as "custom").
HF_PRESETS = {
    "gpt2": (BYTE_LEVEL,),
    "smollm": (r"\p{N}", BYTE_LEVEL),
    "llama3": (LLAMA3,),
    "qwen2": (QWEN2,),
}

# llama.cpp's `tokenizer.ggml.pre` names → (regexes applied in sequence, ignore_merges).
GGUF_PRESETS: dict[str, tuple[tuple[str, ...], bool]] = {
    "default": ((r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"), False),
    "gpt2": ((GPT2,), False),
    "smollm": ((r"\p{N}", GPT2), False),
    "llama3": ((LLAMA3.replace(_CONTRACTIONS_ICASE, _CONTRACTIONS_CASED),), True),
    "qwen2": ((QWEN2.replace(_CONTRACTIONS_ICASE, _CONTRACTIONS_CASED),), False),
}
_GGUF_ALIASES = {
    "gpt-2": "gpt2",
    "phi-2": "gpt2",
    "mpt": "gpt2",
    "olmo": "gpt2",
    "starcoder": "smollm",
    "refact": "smollm",
    "codeshell": "smollm",
    "command-r": "smollm",
    "exaone": "smollm",
    "minerva-7b": "smollm",
    "llama-bpe": "llama3",
    "llama-v3": "llama3",
    "falcon3": "llama3",
    "dbrx": "llama3",
    "smaug-bpe": "llama3",
    "deepseek-r1-qwen": "qwen2",
    "stablelm2": "qwen2",
}


def gguf_preset(name: str) -> tuple[str, tuple[str, ...], bool]:
    """Canonical name, patterns and ignore_merges for a GGUF ``tokenizer.ggml.pre`` value."""
    canonical = _GGUF_ALIASES.get(name, name)
    if canonical not in GGUF_PRESETS:
        raise UnsupportedTokenizerError(f"tokenizer.ggml.pre: unsupported pre-tokenizer {name!r}")
    patterns, ignore_merges = GGUF_PRESETS[canonical]
    return canonical, patterns, ignore_merges


@cache
def _runs() -> tuple[list[int], str]:
    return [int(x, 16) for x in "".join(unicode_data.RUN_STARTS).split(",")], "".join(
        unicode_data.RUN_CATEGORIES
    )


@cache
def category_ranges(category: str) -> str:
    """Class body (no brackets) for a one- or two-letter general category, e.g. L or Lu."""
    starts, cats = _runs()
    ends = [*starts[1:], 0x110000]
    parts = []
    for i, start in enumerate(starts):
        if cats[2 * i : 2 * i + len(category)] == category:
            end = ends[i] - 1
            lo = re.escape(chr(start))
            parts.append(lo if start == end else f"{lo}-{re.escape(chr(end))}")
    if not parts:
        raise UnsupportedTokenizerError(f"regex: unknown Unicode category \\p{{{category}}}")
    return "".join(parts)


_WS_BODY = "".join(re.escape(c) for c in _WHITESPACE)
# In Python's str patterns \w is letters, numbers and "_", and \d is exactly Nd; so letters
# are [^\W\d_] without Nl/No. Classes written this way compile ~40x faster than explicit
# ranges (hundreds of ms in Pyodide) and match faster; tests/tokenizer checks the identities
# against unicodedata. They follow the runtime's Unicode (CPython 3.11: 14.0, Pyodide 314:
# 16.0), which only matters for the few thousand characters assigned since 14.0.
_FAST_CLASSES = {
    # category set → (positive form, negated form); {small} is the class's other members.
    frozenset("LN"): ("[^\\W_]", "[\\W_]"),
    frozenset("L"): ("(?![{nlo}])[^\\W\\d_]", "[\\W\\d_{nlo}]"),
    frozenset("N"): ("[\\d{nlo}]", "[^\\d{nlo}]"),
}
_TOKEN = re.compile(r"\\[pP]\{(\w+)\}|\\[pP](\w)|\\.|\[\^?|.", re.DOTALL)


def _emit_class(negated: bool, cats: set[str], small: str, fast_classes: bool) -> str:
    """A one-character regex for [small + cats] (or its complement when ``negated``)."""
    if not cats:
        return f"[{'^' if negated else ''}{small}]"
    fast = _FAST_CLASSES.get(frozenset(cats)) if fast_classes else None
    if fast is None:
        body = small + "".join(category_ranges(c) for c in sorted(cats))
        return f"[{'^' if negated else ''}{body}]"
    form = fast[negated].format(nlo=category_ranges("Nl") + category_ranges("No"))
    if negated:
        return f"(?:(?![{small}]){form})" if small else form
    return f"(?:{form}|[{small}])" if small else f"(?:{form})"


def translate(pattern: str, fast_classes: bool = True) -> str:
    """Rewrite an Oniguruma pattern for ``re``: \\p{X}, \\P{X}, \\s and \\S become classes.

    ``fast_classes=False`` spells every category as explicit ranges (the reference form)."""
    out: list[str] = []
    tokens = list(_TOKEN.finditer(pattern))
    i = 0
    while i < len(tokens):
        tok = tokens[i].group(0)
        i += 1
        if tok.startswith("["):
            negated, cats, small = tok == "[^", set(), []
            while i < len(tokens) and tokens[i].group(0) != "]":
                m = tokens[i]
                i += 1
                category = m.group(1) or m.group(2)
                if m.group(0) == r"\s":
                    small.append(_WS_BODY)
                elif category and m.group(0)[1] == "p":
                    cats.add(category)
                elif category or m.group(0) in (r"\S", "["):
                    raise UnsupportedTokenizerError(f"regex {pattern!r}: unsupported class item")
                else:
                    small.append(m.group(0))
            if i == len(tokens):
                raise UnsupportedTokenizerError(f"regex {pattern!r}: unterminated class")
            i += 1
            out.append(_emit_class(negated, cats, "".join(small), fast_classes))
        elif tok in (r"\s", r"\S"):
            out.append(_emit_class(tok == r"\S", set(), _WS_BODY, fast_classes))
        elif tokens[i - 1].group(1) or tokens[i - 1].group(2):
            category = tokens[i - 1].group(1) or tokens[i - 1].group(2)
            out.append(_emit_class(tok[1] == "P", {category}, "", fast_classes))
        else:
            out.append(tok)
    return "".join(out)


class PreTokenizer:
    """Applies regex splits in sequence; each later regex only splits the pieces of the
    earlier ones (llama.cpp's and HF's Sequence semantics). Matches and the gaps between
    them both become pieces ("Isolated")."""

    def __init__(self, patterns: list[str]) -> None:
        self._splitters = [_splitter(p) for p in patterns]

    def split(self, text: str) -> list[str]:
        pieces = [text] if text else []
        for splitter in self._splitters:
            out: list[str] = []
            for piece in pieces:
                out.extend(filter(None, splitter(piece)))
            pieces = out
        return pieces


def _splitter(pattern: str) -> Callable[[str], list[str]]:
    """A function returning matches and gaps in order (empty strings allowed)."""
    try:
        regex = re.compile(translate(pattern))
    except re.error as exc:
        raise UnsupportedTokenizerError(f"pre_tokenizer: bad regex {pattern!r} ({exc})") from exc
    if regex.groups == 0 and regex.search("") is None:
        # re.split keeps a captured separator: gap, match, gap, ... all in C.
        return re.compile(f"({regex.pattern})").split

    def split(piece: str) -> list[str]:
        out: list[str] = []
        pos = 0
        for m in regex.finditer(piece):
            start, end = m.span()
            if start < end:  # empty matches split nothing
                out += (piece[pos:start], piece[start:end])
                pos = end
        out.append(piece[pos:])
        return out

    return split
