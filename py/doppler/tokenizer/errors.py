"""Typed errors for tokenizer specs, so callers can tell bad input from bugs."""

from __future__ import annotations


class TokenizerError(ValueError):
    """Base class for every error raised by ``doppler.tokenizer``."""


class SpecError(TokenizerError):
    """A tokenizer source (tokenizer.json, GGUF metadata, spec dict) is malformed."""


class UnsupportedTokenizerError(TokenizerError):
    """A well-formed tokenizer uses a feature this implementation does not have."""


class ChatTemplateError(TokenizerError):
    """A chat template is missing, fails to compile, or raised while rendering."""
