"""The runtime tokenizer: rebuilt from a spec, pure Python (runs in Pyodide)."""

from __future__ import annotations

import codecs
import unicodedata
from typing import Any

from .bpe import BPE, BYTE_DECODER, WordEncoder
from .errors import SpecError
from .pretokenize import PreTokenizer
from .sentencepiece import SPACE, SentencePiece
from .special import AddedToken, AddedTokenSplitter
from .validate import validate_spec


class Tokenizer:
    """Encodes text to ids and back, as the spec's source (HF tokenizers or llama.cpp) does."""

    def __init__(self, spec: dict[str, Any]) -> None:
        validate_spec(spec)
        self.spec = spec
        self.vocab_list: list[str | None] = spec["vocab"]
        vocab = dict(zip(self.vocab_list, range(len(self.vocab_list)), strict=True))
        vocab.pop(None, None)  # type: ignore[call-overload]
        added = [AddedToken(**t) for t in spec["added_tokens"]]
        self._splitter = AddedTokenSplitter(added)
        self._special_ids = frozenset(t.id for t in added if t.special)
        self._normalizer = spec["normalizer"]
        self._pre = PreTokenizer(spec["pre_tokenizer"]["patterns"])
        self._byte_level = spec["byte_level"]
        self._byte_fallback = spec["byte_fallback"]
        self._model: WordEncoder
        if spec["model"] == "bpe":
            self._model = BPE(
                vocab,
                [tuple(m) for m in spec["merges"]],
                byte_level=spec["byte_level"],
                byte_fallback=spec["byte_fallback"],
                ignore_merges=spec["ignore_merges"],
                unk_id=spec["unk_id"],
            )
        else:
            self._model = SentencePiece(
                vocab, spec["scores"], byte_fallback=spec["byte_fallback"], unk_id=spec["unk_id"]
            )
        self._piece_bytes: dict[int, bytes] = {}
        self.bos_id: int | None = spec["bos_id"]
        self.eos_id: int | None = spec["eos_id"]
        self.pad_id: int | None = spec["pad_id"]
        self.eos_ids: set[int] = set(spec["eos_ids"])
        self.chat_template: str | None = spec["chat_template"]

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Tokenizer:
        return cls(spec)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab_list)

    # --- encoding ---------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids for ``text``; added/special tokens written in the text are always matched."""
        ids: list[int] = []
        if add_special_tokens and self.spec["add_bos"] and self.bos_id is not None:
            ids.append(self.bos_id)
        for part in self._splitter.split(text):
            if isinstance(part, int):
                ids.append(part)
            else:
                ids.extend(self._encode_text(part))
        if add_special_tokens and self.spec["add_eos"] and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def _encode_text(self, text: str) -> list[int]:
        for step in self._normalizer:
            kind = step["type"]
            if kind == "replace":
                text = text.replace(step["pattern"], step["content"])
            elif kind == "prepend":
                text = step["content"] + text if text else text
            else:
                text = unicodedata.normalize(kind.upper(), text)
        model = self._model
        if isinstance(model, SentencePiece):
            return model.encode_text(text)
        return model.encode_words(self._pre.split(text))

    # --- decoding ---------------------------------------------------------------------

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes one token stands for (possibly part of a character)."""
        cached = self._piece_bytes.get(token_id)
        if cached is not None:
            return cached
        if not 0 <= token_id < len(self.vocab_list) or self.vocab_list[token_id] is None:
            raise SpecError(f"token id {token_id} is not in the vocab (size {self.vocab_size})")
        text: str = self.vocab_list[token_id]  # type: ignore[assignment]
        if self._byte_level:
            try:
                data = bytes([BYTE_DECODER[c] for c in text])
            except KeyError:  # added tokens outside the byte alphabet stay as written (HF)
                data = text.encode("utf-8")
        elif self._byte_fallback and len(text) == 6 and text.startswith("<0x") and text[-1] == ">":
            data = bytes([int(text[3:5], 16)])
        else:
            data = text.replace(SPACE, " ").encode("utf-8")
        self._piece_bytes[token_id] = data
        return data

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        decoder = self.stream_decoder(skip_special_tokens)
        return "".join([decoder.push(i) for i in ids]) + decoder.flush()

    def stream_decoder(self, skip_special_tokens: bool = False) -> StreamDecoder:
        return StreamDecoder(self, skip_special_tokens)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    # --- chat -------------------------------------------------------------------------

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render ``messages`` with the model's chat template, as transformers does."""
        from .chat import render_chat  # jinja2 is loaded only for chat

        return render_chat(
            self.chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            **{**self.spec["template_tokens"], **kwargs},
        )


class StreamDecoder:
    """Incremental detokenizer: ``push(id)`` returns the newly completed text, never half a
    UTF-8 character (its bytes wait for the next token); ``flush()`` ends the stream."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._strip_pending = tokenizer.spec["strip_leading_space"]

    def push(self, token_id: int) -> str:
        if self._skip and self._tok.is_special(token_id):
            return ""
        text = self._utf8.decode(self._tok.token_bytes(token_id))
        if self._strip_pending and text:
            self._strip_pending = False
            if text.startswith(" "):
                text = text[1:]
        return text

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)
