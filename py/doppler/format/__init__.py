"""RDRR: DOPPLER's model format (root manifest + content-addressed shards).

Pure Python so the runtime can import it in Pyodide: parse and validate a root manifest
(``parse_manifest``) and index shards (``parse_index``), then resolve tensors and
``(layer, expert)`` to byte ranges and block hashes. The byte-level spec is docs/rdrr.md.
"""

from doppler.format.config import ArchConfig
from doppler.format.errors import FormatError
from doppler.format.index import Index, Span, parse_index
from doppler.format.manifest import Manifest, model_id, parse_manifest

__all__ = [
    "ArchConfig",
    "FormatError",
    "Index",
    "Manifest",
    "Span",
    "model_id",
    "parse_index",
    "parse_manifest",
]
