"""Tokenizer specs: one JSON-serialisable dict built from tokenizer.json or GGUF metadata.

The converter stores the spec in the model manifest and the browser rebuilds the tokenizer
from it, so the runtime never parses either source format. Spec fields (version 1):

- ``model``: ``"bpe"`` (merge ranks) or ``"sentencepiece"`` (piece scores).
- ``vocab``: token text by id (``null`` for unused ids); ``merges``: ``[[left, right], ...]``
  in rank order (bpe); ``scores``: one float per id (sentencepiece).
- ``byte_level`` (GPT-2 byte↔character mapping), ``byte_fallback`` (``<0xXX>`` pieces),
  ``ignore_merges`` (whole words found in the vocab skip merging), ``unk_id``.
- ``normalizer``: steps applied to text between added tokens: ``{"type": "nfc"}`` (or nfkc,
  nfd, nfkd), ``{"type": "replace", "pattern": s, "content": t}``,
  ``{"type": "prepend", "content": t}``.
- ``pre_tokenizer``: ``{"name": ..., "patterns": [...]}``, Oniguruma-syntax regexes applied
  in sequence, matches and gaps both kept (``name`` is e.g. smollm, llama3, qwen2, gpt2,
  none, custom).
- ``strip_leading_space``: decoding drops the space the normaliser prepended.
- ``added_tokens``: ``[{"id", "content", "special", "lstrip", "rstrip"}]``, split out of the
  raw text before the model.
- ``bos_id``, ``eos_id``, ``pad_id``, ``eos_ids`` (every id that ends generation),
  ``add_bos``, ``add_eos``, ``chat_template``, ``template_tokens`` (bos_token etc. as text,
  for the template).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import SpecError, TokenizerError, UnsupportedTokenizerError
from .gguf_meta import read_gguf_metadata
from .pretokenize import BYTE_LEVEL, HF_PRESETS, gguf_preset
from .sentencepiece import SPACE

SPEC_VERSION = 1

# Tokens that end a turn; llama.cpp treats these as end-of-generation whatever the config.
END_OF_TURN = frozenset(
    {
        "<|eot_id|>",
        "<|eom_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "</s>",
        "<EOT>",
        "<eos>",
    }
)

# llama.cpp token types (GGUF tokenizer.ggml.token_type).
_UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 2, 3, 4, 6
_TEMPLATE_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


def _eos_ids(vocab: list[str | None], special_ids: set[int], *ids: int | None) -> list[int]:
    found = {i for i in ids if i is not None}
    found.update(i for i in special_ids if vocab[i] in END_OF_TURN)
    return sorted(found)


@contextmanager
def _malformed(source: str) -> Iterator[None]:
    """Turn a lookup/type failure deep in a parsed file into a SpecError naming the source."""
    try:
        yield
    except TokenizerError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise SpecError(f"{source}: malformed ({type(exc).__name__}: {exc})") from exc


def _spec(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": SPEC_VERSION,
        "merges": [],
        "scores": [],
        "byte_level": False,
        "byte_fallback": False,
        "ignore_merges": False,
        "unk_id": None,
        "normalizer": [],
        "pre_tokenizer": {"name": "none", "patterns": []},
        "strip_leading_space": False,
        "pad_id": None,
        "add_eos": False,
        "chat_template": None,
    }
    base.update(fields)
    return base


# --- tokenizer.json -------------------------------------------------------------------


# Where a Sequence node keeps its children, per tokenizer.json section.
_SEQUENCE_KEYS = {
    "normalizer": "normalizers",
    "pre_tokenizer": "pretokenizers",
    "post_processor": "processors",
    "decoder": "decoders",
}


def _flatten(node: dict[str, Any] | None, field: str) -> list[dict[str, Any]]:
    """A normalizer/pre_tokenizer/decoder tree as a flat list (Sequence unpacked)."""
    if node is None:
        return []
    if not isinstance(node, dict) or "type" not in node:
        raise SpecError(f"tokenizer.json: {field} is not an object with a type")
    if node["type"] != "Sequence":
        return [node]
    children = node.get(_SEQUENCE_KEYS[field], [])
    return [leaf for child in children for leaf in _flatten(child, field)]


def _string_pattern(node: dict[str, Any], field: str) -> str:
    pattern = node.get("pattern", {})
    if not isinstance(pattern, dict) or not isinstance(pattern.get("String"), str):
        raise UnsupportedTokenizerError(
            f"tokenizer.json: {field} {node['type']} needs a String pattern"
        )
    return pattern["String"]


def _normalizer(node: dict[str, Any] | None) -> list[dict[str, str]]:
    steps: list[dict[str, str]] = []
    for leaf in _flatten(node, "normalizer"):
        kind = leaf["type"]
        if kind in ("NFC", "NFKC", "NFD", "NFKD"):
            steps.append({"type": kind.lower()})
        elif kind == "Replace":
            pattern = _string_pattern(leaf, "normalizer")
            steps.append({"type": "replace", "pattern": pattern, "content": leaf["content"]})
        elif kind == "Prepend":
            steps.append({"type": "prepend", "content": leaf["prepend"]})
        else:
            raise UnsupportedTokenizerError(f"tokenizer.json: normalizer {kind} is not supported")
    return steps


def _pre_tokenizer(
    node: dict[str, Any] | None, normalizer: list[dict[str, str]]
) -> tuple[dict, bool]:
    """Spec pre_tokenizer and whether it is byte-level."""
    replaced = {s["pattern"] for s in normalizer if s["type"] == "replace"}
    patterns: list[str] = []
    byte_level = False
    for leaf in _flatten(node, "pre_tokenizer"):
        kind = leaf["type"]
        if kind == "ByteLevel":
            if leaf.get("add_prefix_space"):
                raise UnsupportedTokenizerError("tokenizer.json: ByteLevel add_prefix_space")
            byte_level = True
            if leaf.get("use_regex", True):
                patterns.append(BYTE_LEVEL)
        elif kind == "Digits":
            patterns.append(r"\p{N}" if leaf.get("individual_digits") else r"\p{N}+")
        elif kind == "Split":
            pattern = leaf.get("pattern", {})
            if pattern.get("String") in replaced:
                continue  # the normaliser already replaced every occurrence: a no-op split
            if leaf.get("behavior") != "Isolated" or leaf.get("invert"):
                raise UnsupportedTokenizerError(
                    f"tokenizer.json: Split behavior {leaf.get('behavior')} is not supported"
                )
            if "Regex" in pattern:
                patterns.append(pattern["Regex"])
            else:
                patterns.append(
                    "".join("\\" + c if not c.isalnum() else c for c in pattern["String"])
                )
        else:
            raise UnsupportedTokenizerError(
                f"tokenizer.json: pre_tokenizer {kind} is not supported"
            )
    names = {v: k for k, v in HF_PRESETS.items()}
    name = names.get(tuple(patterns), "custom") if patterns else "none"
    return {"name": name, "patterns": patterns}, byte_level


def _post_special(
    node: dict[str, Any] | None, vocab_ids: dict[str, int]
) -> tuple[int | None, int | None]:
    """Ids that the post-processor puts before and after a single sequence."""
    for leaf in _flatten(node, "post_processor"):
        if leaf["type"] != "TemplateProcessing":
            continue
        single = leaf.get("single", [])

        def special_id(item: dict[str, Any]) -> int | None:
            token = item.get("SpecialToken")
            return vocab_ids.get(token["id"]) if token else None

        first = special_id(single[0]) if single else None
        last = special_id(single[-1]) if len(single) > 1 else None
        return first, last
    return None, None


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(config: dict[str, Any]) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if template is not None and not isinstance(template, str):
        raise SpecError("tokenizer_config.json: chat_template is not a string")
    return template


def from_tokenizer_json(tokenizer_json: dict, tokenizer_config: dict | None = None) -> dict:
    """Spec from a parsed HF ``tokenizer.json`` (and ``tokenizer_config.json`` if present)."""
    with _malformed("tokenizer.json"):
        return _from_tokenizer_json(tokenizer_json, tokenizer_config)


def _from_tokenizer_json(tokenizer_json: dict, tokenizer_config: dict | None) -> dict:
    if not isinstance(tokenizer_json, dict) or not isinstance(tokenizer_json.get("model"), dict):
        raise SpecError("tokenizer.json: missing model object")
    config = tokenizer_config or {}
    model = tokenizer_json["model"]
    if model.get("type", "BPE") != "BPE":
        raise UnsupportedTokenizerError(
            f"tokenizer.json: model type {model.get('type')} is not supported"
        )
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise UnsupportedTokenizerError(
            "tokenizer.json: BPE subword prefix/suffix is not supported"
        )
    vocab_map = model.get("vocab")
    if not isinstance(vocab_map, dict):
        raise SpecError("tokenizer.json: model.vocab is not an object")
    added = tokenizer_json.get("added_tokens") or []
    ids = {**vocab_map, **{t["content"]: t["id"] for t in added}}
    if not all(isinstance(i, int) and i >= 0 for i in ids.values()):
        raise SpecError("tokenizer.json: token ids must be non-negative integers")
    vocab: list[str | None] = [None] * (max(ids.values(), default=-1) + 1)
    for text, i in ids.items():
        vocab[i] = text
    merges = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model.get("merges", [])]
    if any(len(m) != 2 for m in merges):
        raise SpecError("tokenizer.json: model.merges entries must be pairs")
    normalizer = _normalizer(tokenizer_json.get("normalizer"))
    pre_tokenizer, byte_level = _pre_tokenizer(tokenizer_json.get("pre_tokenizer"), normalizer)
    decoders = _flatten(tokenizer_json.get("decoder"), "decoder")
    strip = any(d["type"] == "Strip" and d.get("start", 0) > 0 for d in decoders)
    added_tokens = [
        {
            "id": t["id"],
            "content": t["content"],
            "special": bool(t.get("special")),
            "lstrip": bool(t.get("lstrip")),
            "rstrip": bool(t.get("rstrip")),
        }
        for t in added
    ]
    if any(t.get("single_word") for t in added):
        raise UnsupportedTokenizerError(
            "tokenizer.json: single_word added tokens are not supported"
        )
    first, last = _post_special(tokenizer_json.get("post_processor"), ids)
    names = {n: _token_text(config.get(n)) for n in _TEMPLATE_TOKEN_NAMES}
    bos_id = ids.get(names["bos_token"] or "", first)
    eos_id = ids.get(names["eos_token"] or "", last)
    has_post = tokenizer_json.get("post_processor") is not None
    special_ids = {t["id"] for t in added_tokens if t["special"]}
    return _spec(
        source="tokenizer.json",
        model="bpe",
        vocab=vocab,
        merges=merges,
        byte_level=byte_level,
        byte_fallback=bool(model.get("byte_fallback")),
        ignore_merges=bool(model.get("ignore_merges")),
        unk_id=ids.get(model.get("unk_token") or ""),
        normalizer=normalizer,
        pre_tokenizer=pre_tokenizer,
        strip_leading_space=strip,
        added_tokens=added_tokens,
        bos_id=bos_id,
        eos_id=eos_id,
        pad_id=ids.get(names["pad_token"] or ""),
        eos_ids=_eos_ids(vocab, special_ids, eos_id),
        add_bos=first is not None if has_post else bool(config.get("add_bos_token")),
        add_eos=last is not None if has_post else bool(config.get("add_eos_token")),
        chat_template=_chat_template(config),
        template_tokens={n: v for n, v in names.items() if v is not None},
    )


# --- GGUF -----------------------------------------------------------------------------


def _field(
    fields: dict[str, object], key: str, kind: type | tuple[type, ...], default: Any = None
) -> Any:
    value = fields.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise SpecError(f"GGUF metadata: {key} has type {type(value).__name__}")
    return value


def _id_field(fields: dict[str, object], key: str, n_vocab: int) -> int | None:
    value = _field(fields, key, int)
    if value is not None and not 0 <= value < n_vocab:
        raise SpecError(f"GGUF metadata: {key}={value} is outside the vocab (size {n_vocab})")
    return value


def from_gguf_metadata(fields: dict[str, object]) -> dict:
    """Spec from GGUF metadata as plain values (see :func:`gguf_fields`), read as llama.cpp does."""
    with _malformed("GGUF metadata"):
        return _from_gguf_metadata(fields)


def _from_gguf_metadata(fields: dict[str, object]) -> dict:
    kind = _field(fields, "tokenizer.ggml.model", str)
    tokens = _field(fields, "tokenizer.ggml.tokens", list)
    if kind is None or tokens is None:
        raise SpecError("GGUF metadata: tokenizer.ggml.model/tokens missing")
    if not all(isinstance(t, str) for t in tokens):
        raise SpecError("GGUF metadata: tokenizer.ggml.tokens must be strings")
    n = len(tokens)
    types = _field(fields, "tokenizer.ggml.token_type", list, [1] * n)
    if len(types) != n:
        raise SpecError(
            f"GGUF metadata: tokenizer.ggml.token_type has {len(types)} entries, not {n}"
        )
    ids = {
        k: _id_field(fields, f"tokenizer.ggml.{k}_token_id", n)
        for k in ("bos", "eos", "unknown", "padding", "eot", "eom")
    }
    added_tokens = [
        {"id": i, "content": t, "special": ty != _USER_DEFINED, "lstrip": False, "rstrip": False}
        for i, (t, ty) in enumerate(zip(tokens, types, strict=True))
        if ty in (_UNKNOWN, _CONTROL, _USER_DEFINED) or (ty != _BYTE and t in END_OF_TURN)
    ]
    if kind == "gpt2":
        merges_raw = _field(fields, "tokenizer.ggml.merges", list)
        if merges_raw is None:
            raise SpecError("GGUF metadata: tokenizer.ggml.merges missing for a gpt2 tokenizer")
        merges = []
        for m in merges_raw:
            cut = m.find(" ", 1) if isinstance(m, str) else -1
            if cut < 0:
                raise SpecError(f"GGUF metadata: bad merge {m!r}")
            merges.append([m[:cut], m[cut + 1 :]])
        pre_name = _field(fields, "tokenizer.ggml.pre", str, "default")
        name, patterns, ignore_merges = gguf_preset(pre_name)
        model: dict[str, Any] = {
            "model": "bpe",
            "unk_id": None,  # llama.cpp's BPE drops characters it cannot map, never emits unk
            "merges": merges,
            "byte_level": True,
            "ignore_merges": ignore_merges,
            "pre_tokenizer": {"name": name, "patterns": list(patterns)},
        }
        add_bos_default = False
    elif kind == "llama":
        scores = _field(fields, "tokenizer.ggml.scores", list)
        if scores is None or len(scores) != n:
            raise SpecError("GGUF metadata: tokenizer.ggml.scores missing or of the wrong length")
        prefix = bool(_field(fields, "tokenizer.ggml.add_space_prefix", bool, True))
        normalizer = [{"type": "replace", "pattern": " ", "content": SPACE}]
        model = {
            "model": "sentencepiece",
            "unk_id": ids["unknown"],
            "scores": [float(s) for s in scores],
            "byte_fallback": _BYTE in types,
            "normalizer": normalizer + ([{"type": "prepend", "content": SPACE}] if prefix else []),
            "strip_leading_space": prefix,
        }
        add_bos_default = True
    else:
        raise UnsupportedTokenizerError(
            f"GGUF metadata: tokenizer.ggml.model {kind!r} is not supported"
        )
    special_ids = {t["id"] for t in added_tokens if t["special"]}
    template_tokens = {
        name: tokens[ids[key]]
        for name, key in (
            ("bos_token", "bos"),
            ("eos_token", "eos"),
            ("unk_token", "unknown"),
            ("pad_token", "padding"),
        )
        if ids[key] is not None
    }
    return _spec(
        source="gguf",
        vocab=list(tokens),
        added_tokens=added_tokens,
        bos_id=ids["bos"],
        eos_id=ids["eos"],
        pad_id=ids["padding"],
        eos_ids=_eos_ids(tokens, special_ids, ids["eos"], ids["eot"], ids["eom"]),
        add_bos=bool(_field(fields, "tokenizer.ggml.add_bos_token", bool, add_bos_default)),
        add_eos=bool(_field(fields, "tokenizer.ggml.add_eos_token", bool, False)),
        chat_template=_field(fields, "tokenizer.chat_template", str),
        template_tokens=template_tokens,
        **model,
    )


def gguf_fields(path: str | Path) -> dict[str, object]:
    """A GGUF file's metadata as the plain values :func:`from_gguf_metadata` takes."""
    return read_gguf_metadata(path)
