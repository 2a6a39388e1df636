"""Typed errors for the RDRR format and the converter.

Every bad input (a manifest, an index shard, a source model file) raises a subclass of
``FormatError`` whose message names the offending field or file, so the CLI can print one
specific line and exit non-zero, and the runtime can tell corruption from a bug.
It derives from ``DopplerError`` so the worker protocol carries it with a stable code.
"""

from doppler.errors import DopplerError


class FormatError(DopplerError):
    """Base of every error raised for bad RDRR or bad source-model input."""

    code = "bad_model"


class SchemaError(FormatError):
    """A JSON document has a missing, extra or mistyped field, or an invalid value."""


class InvalidNameError(FormatError):
    """A shard, tensor or model name is malformed (not 64-hex, path separators, ``..``)."""


class InvalidRangeError(FormatError):
    """A byte range overlaps another, falls outside its shard, or is misaligned."""


class SizeError(FormatError):
    """A size or count is negative, absurd, or disagrees with what it summarises."""


class HashMismatchError(FormatError):
    """Bytes do not hash to the name or block hash that refers to them."""


class MissingFileError(FormatError):
    """A file the model refers to is absent."""


class UnsupportedError(FormatError):
    """A version, layout, dtype or architecture that this code does not handle."""


class SourceError(FormatError):
    """A source model file (GGUF, safetensors, config.json) is truncated or corrupt."""


class ShapeMismatchError(FormatError):
    """A tensor's shape disagrees with the architecture config."""
