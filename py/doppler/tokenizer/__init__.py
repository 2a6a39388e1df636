"""Pure-Python tokenizers (byte-level BPE, SentencePiece-style BPE) and chat templates.

Build a spec once with :mod:`doppler.tokenizer.spec` (from tokenizer.json or GGUF metadata),
store it with the model, and rebuild the tokenizer anywhere with ``Tokenizer.from_spec``.
"""

from .errors import ChatTemplateError, SpecError, TokenizerError, UnsupportedTokenizerError
from .tokenizer import StreamDecoder, Tokenizer

__all__ = [
    "ChatTemplateError",
    "SpecError",
    "StreamDecoder",
    "Tokenizer",
    "TokenizerError",
    "UnsupportedTokenizerError",
]
