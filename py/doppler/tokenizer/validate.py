"""Checks a spec dict before use, so a bad manifest fails with the field's name."""

from __future__ import annotations

from typing import Any

from .errors import SpecError

_BOOLS = (
    "byte_level",
    "byte_fallback",
    "ignore_merges",
    "strip_leading_space",
    "add_bos",
    "add_eos",
)
_OPTIONAL_IDS = ("unk_id", "bos_id", "eos_id", "pad_id")


def _require(cond: bool, field: str, what: str) -> None:
    if not cond:
        raise SpecError(f"tokenizer spec: {field} {what}")


def validate_spec(spec: Any) -> None:
    """Raise :class:`SpecError` naming the first malformed field of ``spec``."""
    _require(isinstance(spec, dict), "spec", "is not an object")
    _require(spec.get("version") == 1, "version", "must be 1")
    _require(spec.get("model") in ("bpe", "sentencepiece"), "model", "must be bpe or sentencepiece")
    vocab = spec.get("vocab")
    _require(isinstance(vocab, list) and len(vocab) > 0, "vocab", "must be a non-empty list")
    _require(set(map(type, vocab)) <= {str, type(None)}, "vocab", "entries must be strings or null")
    n = len(vocab)
    for name in _BOOLS:
        _require(isinstance(spec.get(name), bool), name, "must be a boolean")
    for name in _OPTIONAL_IDS:
        value = spec.get(name)
        _require(
            value is None or (type(value) is int and 0 <= value < n),
            name,
            "must be a vocab id or null",
        )
    eos_ids = spec.get("eos_ids")
    _require(
        isinstance(eos_ids, list) and all(type(i) is int and 0 <= i < n for i in eos_ids),
        "eos_ids",
        "must be vocab ids",
    )
    merges = spec.get("merges")
    _require(
        isinstance(merges, list)
        and all(
            isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m)
            for m in merges
        ),
        "merges",
        "must be a list of [left, right] string pairs",
    )
    scores = spec.get("scores")
    _require(
        isinstance(scores, list) and set(map(type, scores)) <= {int, float},
        "scores",
        "must be numbers",
    )
    if spec["model"] == "sentencepiece":
        _require(len(scores) == n, "scores", f"must have one entry per token ({n})")
    added = spec.get("added_tokens")
    _require(isinstance(added, list), "added_tokens", "must be a list")
    for t in added:
        _require(
            isinstance(t, dict)
            and set(t) == {"id", "content", "special", "lstrip", "rstrip"}
            and type(t["id"]) is int
            and 0 <= t["id"] < n
            and isinstance(t["content"], str)
            and all(isinstance(t[k], bool) for k in ("special", "lstrip", "rstrip")),
            "added_tokens",
            f"has a malformed entry {t!r:.80}",
        )
    normalizer = spec.get("normalizer")
    _require(isinstance(normalizer, list), "normalizer", "must be a list")
    for step in normalizer:
        kind = step.get("type") if isinstance(step, dict) else None
        fields = {"replace": {"pattern", "content"}, "prepend": {"content"}}.get(kind, set())
        _require(
            kind in ("nfc", "nfkc", "nfd", "nfkd", "replace", "prepend")
            and set(step) == fields | {"type"}
            and all(isinstance(step[f], str) for f in fields),
            "normalizer",
            f"has a malformed step {step!r:.80}",
        )
    pre = spec.get("pre_tokenizer")
    _require(
        isinstance(pre, dict)
        and isinstance(pre.get("name"), str)
        and isinstance(pre.get("patterns"), list)
        and all(isinstance(p, str) for p in pre["patterns"]),
        "pre_tokenizer",
        "must be {name, patterns: [regex, ...]}",
    )
    template = spec.get("chat_template")
    _require(
        template is None or isinstance(template, str), "chat_template", "must be a string or null"
    )
    tokens = spec.get("template_tokens")
    _require(
        isinstance(tokens, dict) and all(isinstance(v, str) for v in tokens.values()),
        "template_tokens",
        "must map names to strings",
    )
