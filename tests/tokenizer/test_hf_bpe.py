"""tokenizer.json byte-level BPEs (GPT-2, SmolLM, Llama 3, Qwen2 styles) against HF tokenizers.

Small BPEs are trained in the test with HF ``tokenizers`` itself, serialised to
tokenizer.json, converted to our spec, and compared on the shared corpus.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from doppler.tokenizer import Tokenizer
from doppler.tokenizer.pretokenize import LLAMA3, QWEN2
from doppler.tokenizer.spec import from_tokenizer_json
from tokenizer.models import load_fixture

TEXTS = [c["text"] for c in load_fixture("smollm2")["cases"]]
SPECIALS = ["<|begin_of_text|>", "<|im_start|>", "<|im_end|>"]


def _split(pattern: str) -> pre_tokenizers.Split:
    return pre_tokenizers.Split(Regex(pattern), behavior="isolated")


def _byte_level(use_regex: bool) -> pre_tokenizers.ByteLevel:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)


STYLES: dict[str, dict[str, Any]] = {
    "gpt2": {"pre": _byte_level(True)},
    "smollm": {
        "pre": pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), _byte_level(True)]
        )
    },
    "llama3": {
        "pre": pre_tokenizers.Sequence([_split(LLAMA3), _byte_level(False)]),
        "ignore_merges": True,
        "bos": True,
    },
    "qwen2": {
        "pre": pre_tokenizers.Sequence([_split(QWEN2), _byte_level(False)]),
        "normalizer": normalizers.NFC(),
    },
}


def train(style: str) -> HFTokenizer:
    options = STYLES[style]
    tok = HFTokenizer(models.BPE(ignore_merges=options.get("ignore_merges", False)))
    tok.pre_tokenizer = options["pre"]
    if "normalizer" in options:
        tok.normalizer = options["normalizer"]
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS, trainer)
    if options.get("bos"):
        bos = SPECIALS[0]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return tok


@pytest.fixture(scope="module", params=sorted(STYLES))
def trained(request: pytest.FixtureRequest) -> tuple[str, HFTokenizer, dict[str, Any]]:
    hf = train(request.param)
    config = {"bos_token": SPECIALS[0], "eos_token": "<|im_end|>"}
    return request.param, hf, from_tokenizer_json(json.loads(hf.to_str()), config)


def test_spec_recognises_style(trained: tuple[str, HFTokenizer, dict[str, Any]]) -> None:
    style, _, spec = trained
    assert spec["pre_tokenizer"]["name"] == style
    assert spec["byte_level"] is True
    assert spec["add_bos"] is bool(STYLES[style].get("bos"))
    assert spec["eos_ids"] == [SPECIALS.index("<|im_end|>")]


def test_encode_decode_equal_hf(trained: tuple[str, HFTokenizer, dict[str, Any]]) -> None:
    _, hf, spec = trained
    ours = Tokenizer.from_spec(json.loads(json.dumps(spec)))
    for text in TEXTS:
        ids = hf.encode(text).ids
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=False), text


def test_planted_bug_wrong_regex() -> None:
    """Llama 3's three-digit groups read as Qwen2's one-digit split change ids."""
    hf = train("llama3")
    spec = from_tokenizer_json(json.loads(hf.to_str()))
    spec["pre_tokenizer"]["patterns"] = [QWEN2]
    ours = Tokenizer.from_spec(spec)
    assert any(ours.encode(t) != hf.encode(t).ids for t in TEXTS if "12345" in t)
