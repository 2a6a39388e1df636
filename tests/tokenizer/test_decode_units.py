"""Added-token splitting and streaming detokenization on tiny hand-made vocabularies."""

from __future__ import annotations

import random
from typing import Any

from doppler.tokenizer import Tokenizer
from doppler.tokenizer.bpe import BYTE_ENCODER, byte_token
from doppler.tokenizer.sentencepiece import SPACE
from doppler.tokenizer.spec import from_gguf_metadata
from doppler.tokenizer.special import AddedToken, AddedTokenSplitter


def byte_level_tokenizer() -> Tokenizer:
    """Every byte is a token (ids 0..255), plus two specials; no merges."""
    tokens = [*BYTE_ENCODER, "<s>", "<|end|>"]
    return Tokenizer.from_spec(
        from_gguf_metadata(
            {
                "tokenizer.ggml.model": "gpt2",
                "tokenizer.ggml.pre": "gpt2",
                "tokenizer.ggml.tokens": tokens,
                "tokenizer.ggml.merges": [],
                "tokenizer.ggml.token_type": [1] * 256 + [3, 3],
                "tokenizer.ggml.bos_token_id": 256,
                "tokenizer.ggml.add_bos_token": True,
            }
        )
    )


def sentencepiece_tokenizer() -> Tokenizer:
    """Byte pieces, a few words, and Llama-2-style space prefixing."""
    words = [SPACE, "h", "i", "hi", SPACE + "hi", "é"]
    pieces = ["<unk>", "<s>", *(byte_token(b) for b in range(256)), *words]
    fields: dict[str, Any] = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": pieces,
        "tokenizer.ggml.scores": [0.0] * len(pieces),
        "tokenizer.ggml.token_type": [2, 3] + [6] * 256 + [1] * len(words),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.unknown_token_id": 0,
    }
    return Tokenizer.from_spec(from_gguf_metadata(fields))


def test_splitter_is_leftmost_longest() -> None:
    splitter = AddedTokenSplitter([AddedToken(1, "<a>"), AddedToken(2, "<a><b>")])
    assert splitter.split("x<a><b>y<a>") == ["x", 2, "y", 1]
    assert splitter.split("<a") == ["<a"]
    assert AddedTokenSplitter([]).split("abc") == ["abc"]


def test_splitter_strips_around_tokens() -> None:
    splitter = AddedTokenSplitter([AddedToken(1, "<m>", lstrip=True, rstrip=True)])
    assert splitter.split("a  <m>\n b") == ["a", 1, "b"]


def test_stream_never_splits_characters() -> None:
    tok = byte_level_tokenizer()
    text = "a🙂é東"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text.encode())
    decoder = tok.stream_decoder()
    assert [decoder.push(i) for i in ids] == ["a", "", "", "", "🙂", "", "é", "", "", "東"]
    assert decoder.flush() == ""


def test_stream_equals_decode_on_random_ids() -> None:
    """Including invalid UTF-8, where both produce the same replacement characters."""
    for tok in (byte_level_tokenizer(), sentencepiece_tokenizer()):
        rng = random.Random(7)
        for _ in range(200):
            ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randint(0, 12))]
            for skip in (False, True):
                decoder = tok.stream_decoder(skip)
                streamed = "".join(decoder.push(i) for i in ids) + decoder.flush()
                assert streamed == tok.decode(ids, skip)


def test_skip_special_tokens() -> None:
    tok = byte_level_tokenizer()
    ids = tok.encode("hi<|end|>")
    assert ids[0] == 256 and ids[-1] == 257
    assert tok.decode(ids) == "<s>hi<|end|>"
    assert tok.decode(ids, skip_special_tokens=True) == "hi"
    assert tok.eos_ids == {257}


def test_sentencepiece_space_prefix_and_byte_fallback() -> None:
    tok = sentencepiece_tokenizer()
    ids = tok.encode("hi 東")
    pieces = [tok.vocab_list[i] for i in ids]
    assert pieces == ["<s>", SPACE + "hi", SPACE, "<0xE6>", "<0x9D>", "<0xB1>"]
    assert tok.decode(ids, skip_special_tokens=True) == "hi 東"
