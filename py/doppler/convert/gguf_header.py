"""Parse a GGUF header (metadata + tensor table) without loading tensor data.

``gguf.GGUFReader`` builds a numpy view per array element, which costs ~700 MB for Gemma 3's
262k-token vocabulary; this reader walks the same layout with ``struct`` over an ``mmap``
and returns plain Python values (what ``ReaderField.contents()`` returns), using the gguf
package's own type tables. Every read is bounds-checked: a truncated or corrupt file is a
``SourceError`` naming what was being read.
"""

import mmap
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType

from doppler.format.errors import SourceError

_SCALARS = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
MAX_DIMS = 4


@dataclass(frozen=True)
class GgufTensorInfo:
    name: str
    type_name: str  # GGMLQuantizationType name, e.g. "Q4_K"
    shape: tuple[int, ...]  # logical row-major (GGML ne reversed)
    offset: int  # absolute file offset of the data
    nbytes: int


class _Cursor:
    def __init__(self, buf: mmap.mmap, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise SourceError(f"{self.path}: truncated while reading {what} at byte {self.pos}")
        out = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return out

    def string(self, what: str) -> str:
        (length,) = self.unpack("Q", what)
        if self.pos + length > len(self.buf):
            raise SourceError(f"{self.path}: truncated while reading {what} at byte {self.pos}")
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SourceError(f"{self.path}: {what} is not UTF-8") from None

    def value(self, vtype: int, what: str) -> object:
        if vtype == GGUFValueType.STRING:
            return self.string(what)
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[GGUFValueType(vtype)], what)[0]
        if vtype != GGUFValueType.ARRAY:
            raise SourceError(f"{self.path}: {what} has unknown value type {vtype}")
        item_type, count = self.unpack("IQ", what)
        if count > len(self.buf):
            raise SourceError(f"{self.path}: {what} claims {count} items")
        if item_type in _SCALARS:
            return list(self.unpack(f"{count}{_SCALARS[GGUFValueType(item_type)]}", what))
        return [self.value(item_type, what) for _ in range(count)]


def read_header(path: Path) -> tuple[dict[str, object], list[GgufTensorInfo]]:
    """(metadata fields, tensor table) of a GGUF v2/v3 file."""
    path = Path(path)
    with path.open("rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            raise SourceError(f"{path}: empty file") from None
    with buf:
        cur = _Cursor(buf, path)
        magic, version, n_tensors, n_kv = cur.unpack("4sIQQ", "the GGUF header")
        if magic != b"GGUF":
            raise SourceError(f"{path}: not a GGUF file (magic {magic!r})")
        if version not in (2, 3):
            raise SourceError(f"{path}: GGUF version {version} is not supported")
        if n_tensors > len(buf) or n_kv > len(buf):
            raise SourceError(f"{path}: header claims {n_tensors} tensors, {n_kv} fields")
        fields: dict[str, object] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            (vtype,) = cur.unpack("I", f"type of {key}")
            fields[key] = cur.value(vtype, f"metadata {key}")
        table = [_tensor_info(cur, i) for i in range(n_tensors)]
        alignment = fields.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
        if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
            raise SourceError(f"{path}: general.alignment {alignment!r} is not a power of two")
        start = -(-cur.pos // alignment) * alignment
        size = len(buf)
    tensors = []
    for name, ne, type_id, rel in table:
        try:
            qtype = GGMLQuantizationType(type_id)
        except ValueError:
            raise SourceError(f"{path}: tensor {name} has unknown GGML type {type_id}") from None
        block, type_size = GGML_QUANT_SIZES[qtype]
        if ne[0] % block or rel % alignment:
            raise SourceError(
                f"{path}: tensor {name} has a row of {ne[0]} (block {block}) or "
                f"an unaligned offset {rel}"
            )
        nbytes = prod(ne) // block * type_size
        if start + rel + nbytes > size:
            raise SourceError(
                f"{path}: tensor {name} ends at byte {start + rel + nbytes}, past "
                f"the end of the file ({size}); the file is truncated"
            )
        tensors.append(GgufTensorInfo(name, qtype.name, tuple(reversed(ne)), start + rel, nbytes))
    return fields, tensors


def _tensor_info(cur: _Cursor, i: int) -> tuple[str, tuple[int, ...], int, int]:
    name = cur.string(f"tensor #{i} name")
    (n_dims,) = cur.unpack("I", f"tensor {name} rank")
    if not 1 <= n_dims <= MAX_DIMS:
        raise SourceError(f"{cur.path}: tensor {name} has rank {n_dims}")
    ne = cur.unpack(f"{n_dims}Q", f"tensor {name} dims")
    if any(d == 0 or d > 1 << 40 for d in ne):
        raise SourceError(f"{cur.path}: tensor {name} has absurd dims {list(ne)}")
    type_id, offset = cur.unpack("IQ", f"tensor {name} type")
    return name, ne, type_id, offset
