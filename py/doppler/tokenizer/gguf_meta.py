"""Read a GGUF file's metadata key/values (not its tensors) as plain Python values.

The ``gguf`` package's GGUFReader builds a numpy view per array element, which takes over a
minute for Gemma 3's 262k-token vocabulary; this reads the same section with ``struct`` in a
fraction of a second. It is pure Python, but only the converter needs it.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

from .errors import SpecError

# GGUF value types → struct format (strings and arrays are handled apart).
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


class _Cursor:
    def __init__(self, data: Any, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise SpecError(f"{self.path}: GGUF metadata is truncated")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def string(self) -> str:
        (length,) = self.unpack("Q")
        end = self.pos + length
        if end > len(self.data):
            raise SpecError(f"{self.path}: GGUF metadata is truncated")
        raw = bytes(self.data[self.pos : end])
        self.pos = end
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(f"{self.path}: string at byte {end - length} not UTF-8") from exc

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])[0]
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.unpack("IQ")
            if item_kind in _SCALARS:
                return list(self.unpack(f"{count}{_SCALARS[item_kind]}"))
            return [self.value(item_kind) for _ in range(count)]
        raise SpecError(f"{self.path}: unknown GGUF value type {kind} at byte {self.pos}")


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """All metadata key/values of a GGUF (v2/v3) file."""
    path = Path(path)
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            cur = _Cursor(data, path)
            magic, version, _n_tensors, n_kv = cur.unpack("4sIQQ")
            if magic != b"GGUF" or version not in (2, 3):
                raise SpecError(f"{path}: not a GGUF v2/v3 file")
            fields: dict[str, Any] = {}
            for _ in range(n_kv):
                key = cur.string()
                (kind,) = cur.unpack("I")
                fields[key] = cur.value(kind)
            return fields
    except (OSError, ValueError) as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"{path}: cannot read GGUF metadata ({exc})") from exc
