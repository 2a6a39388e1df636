"""GGUF tokenizers against llama.cpp (fixtures from scripts/make_tokenizer_fixtures.py)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pytest

from doppler.tokenizer import Tokenizer, sentencepiece
from tokenizer.models import gemma3_path, load_fixture, smollm2_path

pytestmark = pytest.mark.slow

MODELS = ["smollm2", "gemma3"]


def mismatches(tok: Tokenizer, cases: list[dict[str, Any]]) -> list[str]:
    """Texts whose ids differ from llama.cpp's."""
    return [c["text"] for c in cases if tok.encode(c["text"]) != c["ids"]]


@pytest.fixture(params=MODELS)
def model(request: pytest.FixtureRequest) -> tuple[str, Tokenizer, dict[str, Any]]:
    name = request.param
    return name, request.getfixturevalue(name), load_fixture(name)


def test_fixture_matches_model_file(model: tuple[str, Tokenizer, dict[str, Any]]) -> None:
    """The fixtures were made from these exact GGUF files."""
    name, _, fixture = model
    path = smollm2_path() if name == "smollm2" else gemma3_path()
    assert fixture["gguf"] == path.name
    assert len(fixture["cases"]) > 150


def test_encode_matches_llama_cpp(model: tuple[str, Tokenizer, dict[str, Any]]) -> None:
    _, tok, fixture = model
    assert mismatches(tok, fixture["cases"]) == []


def test_decode_matches_llama_cpp(model: tuple[str, Tokenizer, dict[str, Any]]) -> None:
    _, tok, fixture = model
    bad = [c["text"] for c in fixture["cases"] if tok.decode(c["ids"]) != c["decoded"]]
    assert bad == []


def test_round_trip_and_stream(model: tuple[str, Tokenizer, dict[str, Any]]) -> None:
    """decode(encode(x)) == x (with BOS skipped), and streaming gives the same text.

    Known losses, shared with llama.cpp: SmolLM2's vocab lacks tokens for a few control
    bytes (dropped), and SentencePiece cannot tell a literal U+2581 from an escaped space."""
    _, tok, fixture = model
    dropped = {chr(b) for b in range(128) if not tok.encode(chr(b), add_special_tokens=False)}
    assert all(unicodedata.category(c) == "Cc" for c in dropped)
    for case in fixture["cases"]:
        text = "".join(c for c in case["text"] if c not in dropped)
        ids = tok.encode(text, add_special_tokens=False)
        if tok.spec["model"] == "sentencepiece":
            text = text.replace("\u2581", " ")
        assert tok.decode(ids) == text
        decoder = tok.stream_decoder()
        pieces = [decoder.push(i) for i in ids]
        assert "".join(pieces) + decoder.flush() == text
        assert all("\ufffd" not in p for p in pieces), "a piece held half a character"


def test_smollm2_special_ids(smollm2: Tokenizer, smollm2_spec: dict[str, Any]) -> None:
    """GGUF says bos 1, eos 2 (<|im_end|>), no BOS added; <|endoftext|> also ends a turn."""
    assert smollm2.bos_id == 1
    assert smollm2.eos_ids == {0, 2}
    assert smollm2_spec["add_bos"] is False
    assert smollm2_spec["pre_tokenizer"]["name"] == "smollm"


def test_gemma3_special_ids(gemma3: Tokenizer, gemma3_spec: dict[str, Any]) -> None:
    assert gemma3.bos_id == 2
    assert gemma3.eos_ids == {1, 106}  # <eos>, <end_of_turn>
    assert gemma3_spec["add_bos"] is True
    assert gemma3.encode("") == [2]


# --- planted bugs: the comparisons above must notice each of these -------------------


def test_planted_bug_no_digit_split(smollm2_spec: dict[str, Any]) -> None:
    """Without the smollm per-digit split (what transformers' GGUF loader does) ids differ.

    SmolLM2's vocab has no multi-digit ASCII tokens, so only other scripts' digits show it."""
    patterns = smollm2_spec["pre_tokenizer"]["patterns"]
    assert patterns[0] == r"\p{N}"
    spec = {**smollm2_spec, "pre_tokenizer": {"name": "gpt2", "patterns": patterns[1:]}}
    bad = mismatches(Tokenizer.from_spec(spec), load_fixture("smollm2")["cases"])
    assert any("\u0661\u0662\u0663" in text for text in bad)  # Arabic-Indic 123


def test_planted_bug_dropped_merge(smollm2_spec: dict[str, Any]) -> None:
    assert smollm2_spec["merges"][0] == ["Ġ", "t"]
    spec = {**smollm2_spec, "merges": smollm2_spec["merges"][1:]}
    assert mismatches(Tokenizer.from_spec(spec), load_fixture("smollm2")["cases"])


def test_planted_bug_score_order(gemma3_spec: dict[str, Any]) -> None:
    """Merging the lowest-scoring pair first (a min/max heap mix-up) changes Gemma's ids."""
    spec = {**gemma3_spec, "scores": [-s for s in gemma3_spec["scores"]]}
    bad = mismatches(Tokenizer.from_spec(spec), load_fixture("gemma3")["cases"])
    assert any("Hello" in text for text in bad)


def test_planted_bug_special_tokens_not_split(gemma3_spec: dict[str, Any]) -> None:
    added = [t for t in gemma3_spec["added_tokens"] if t["content"] != "<start_of_turn>"]
    spec = {**gemma3_spec, "added_tokens": added}
    bad = mismatches(Tokenizer.from_spec(spec), load_fixture("gemma3")["cases"])
    assert any("<start_of_turn>" in text for text in bad)


def test_planted_bug_naive_sentencepiece_segments(
    gemma3_spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cutting before every "▁" run ignores Gemma's piece ">▁</" and changes ids."""
    naive = re.compile("(?<=[^\u2581])(?=\u2581)")
    monkeypatch.setattr(sentencepiece, "_boundary_regex", lambda vocab: naive)
    bad = mismatches(Tokenizer.from_spec(gemma3_spec), load_fixture("gemma3")["cases"])
    assert "x> </y" in bad
