"""Stream tensors into an RDRR directory atomically (shared by convert and synth).

Peak memory is one shard buffer plus the piece being copied into it: tensors are loaded
lazily, in plan order, one piece (row range) at a time, so a tensor larger than a shard is
never whole in memory. Output goes to a hidden temp directory
beside ``out``, is verified, then renamed into place, so ``out`` appears complete or not
at all.
"""

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np
from tqdm import tqdm

from doppler.format.canonical import expected_tensors
from doppler.format.config import ArchConfig
from doppler.format.errors import FormatError, ShapeMismatchError, SizeError, SourceError
from doppler.format.hashing import block_hashes, sha256_hex
from doppler.format.index import (
    MAX_SHARD_SIZE,
    MIN_BLOCK,
    ExpertEntry,
    ShardInfo,
    Span,
    TensorEntry,
    index_document,
    is_power_of_two,
)
from doppler.format.layouts import LAYOUTS
from doppler.format.manifest import IndexRef, LayoutStat, Manifest, ShardRef
from doppler.format.plan import BLOCK_SIZE, Piece, Plan, TensorSpec, make_plan
from doppler.format.strict import dump_json

MANIFEST_NAME = "manifest.json"
Loader = Callable[[int, int], tuple[str, np.ndarray]]


@dataclass(frozen=True)
class SourceTensor:
    """A tensor to store: canonical name, layout, logical shape, and a lazy loader.

    ``load(lo, hi)`` returns ``(layout, packed uint8 bytes)`` of rows ``lo..hi`` (rows =
    all dims but the last), exactly as pack.py packs a tensor of shape (hi - lo, row_len).
    """

    name: str
    layout: str
    shape: tuple[int, ...]
    load: Loader


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str
    config: ArchConfig
    tokenizer: dict | None
    mirrors: tuple[str, ...] = ()


def check_tensor_set(config: ArchConfig, tensors: list[SourceTensor]) -> list[SourceTensor]:
    """The tensors in canonical order, after checking names and shapes against the config."""
    expected = expected_tensors(config)
    by_name: dict[str, SourceTensor] = {}
    for tensor in tensors:
        if tensor.name in by_name:
            raise SourceError(f"tensor {tensor.name} appears twice in the source")
        by_name[tensor.name] = tensor
    for name, shape in expected.items():
        if name not in by_name:
            raise SourceError(f"source lacks tensor {name} required by the config")
        if tuple(by_name[name].shape) != shape:
            raise ShapeMismatchError(
                f"tensor {name}: shape {list(by_name[name].shape)} but the config implies "
                f"{list(shape)}"
            )
    extra = sorted(by_name.keys() - expected.keys())
    if extra:
        raise SourceError(f"tensor {extra[0]} is not part of this architecture's config")
    return [by_name[name] for name in expected]


def check_block_size(block_size: int) -> None:
    """Refuse a block size readers would reject (docs/rdrr.md: power of two, 4 KiB..64 MiB)."""
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, int)
        or not is_power_of_two(block_size)
        or not MIN_BLOCK <= block_size <= MAX_SHARD_SIZE
    ):
        raise FormatError(
            f"block size {block_size!r} is invalid: it must be a power of two from "
            f"{MIN_BLOCK} (4 KiB) to {MAX_SHARD_SIZE} (64 MiB)"
        )


def write_model(
    out: Path,
    info: ModelInfo,
    tensors: list[SourceTensor],
    *,
    plan_only: bool = False,
    progress: bool = True,
    verify: Callable[[Path], object] | None = None,
    block_size: int = BLOCK_SIZE,
) -> Path:
    """Write the model to ``out`` (which must not exist); returns ``out``.

    ``block_size`` is the unit of the index's block hashes, hence the smallest byte range
    a client can fetch and verify alone (small blocks let an MoE pager fetch one expert).
    """
    out = Path(out)
    check_block_size(block_size)
    if out.exists():
        raise FormatError(f"output {out} already exists; remove it or choose another path")
    info.config.validated()
    ordered = check_tensor_set(info.config, tensors)
    specs = [
        TensorSpec(t.name, t.layout, tuple(t.shape), LAYOUTS[t.layout].nbytes(t.shape))
        for t in ordered
    ]
    plan = make_plan(specs, info.config.total_layers, block_size=block_size)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        loaders = {t.name: t.load for t in ordered}
        shards = (
            _fake_shards(plan, info.source)
            if plan_only
            else _write_shards(tmp, plan, loaders, progress)
        )
        _write_manifest(tmp, info, plan, shards)
        if verify is not None:
            verify(tmp)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_shards(
    tmp: Path, plan: Plan, loaders: dict[str, Loader], progress: bool
) -> list[ShardInfo]:
    infos: list[ShardInfo] = []
    total = sum(s.size for s in plan.shards)
    with tqdm(total=total, unit="B", unit_scale=True, desc="shards", disable=not progress) as bar:
        for shard in plan.shards:
            buf = bytearray(shard.size)
            view = memoryview(buf)
            for piece in shard.pieces:
                view[piece.offset : piece.offset + piece.size] = _piece_bytes(
                    plan.specs[piece.tensor], loaders[piece.tensor], piece
                )
            view.release()
            infos.append(_store(tmp, buf, plan.block_size, infos))
            bar.update(shard.size)
    return infos


def _piece_bytes(spec: TensorSpec, loader: Loader, piece: Piece) -> np.ndarray:
    """The piece's bytes, packing only the rows it touches (layouts store rows
    independently at a fixed stride, so a row range packs to a byte range)."""
    row_bytes = spec.nbytes // prod(spec.shape[:-1])
    lo = piece.tensor_offset // row_bytes
    hi = -(-(piece.tensor_offset + piece.size) // row_bytes)
    layout, data = loader(lo, hi)
    data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if layout != spec.layout or data.size != (hi - lo) * row_bytes:
        raise SizeError(
            f"tensor {spec.name}: rows [{lo}, {hi}) packed as {layout} "
            f"({data.size} bytes), planned {spec.layout} "
            f"({(hi - lo) * row_bytes} bytes)"
        )
    start = piece.tensor_offset - lo * row_bytes
    return data[start : start + piece.size]


def _store(tmp: Path, data: bytearray, block_size: int, known: list[ShardInfo]) -> ShardInfo:
    name = sha256_hex(data)
    if any(info.name == name for info in known):
        raise FormatError(f"two shards have identical bytes ({name}); cannot address both")
    (tmp / f"{name}.bin").write_bytes(data)
    return ShardInfo(name, len(data), block_hashes(data, block_size))


def _fake_shards(plan: Plan, seed: str) -> list[ShardInfo]:
    """Plan-only: deterministic stand-in hashes of the right sizes (no weights exist)."""
    infos = []
    for i, shard in enumerate(plan.shards):
        name = hashlib.sha256(f"plan-only:{seed}:{i}".encode()).hexdigest()
        blocks = -(-shard.size // plan.block_size)
        infos.append(
            ShardInfo(
                name,
                shard.size,
                "".join(hashlib.sha256(f"{name}:{b}".encode()).hexdigest() for b in range(blocks)),
            )
        )
    return infos


def _write_manifest(tmp: Path, info: ModelInfo, plan: Plan, shards: list[ShardInfo]) -> None:
    def spans(items: list[tuple[int, int, int]]) -> tuple[Span, ...]:
        return tuple(Span(shards[s].name, o, n) for s, o, n in items)

    refs: list[IndexRef] = []
    fixed = 0
    for group in plan.groups:
        doc = index_document(
            block_size=plan.block_size,
            alignment=plan.alignment,
            layers=group.layers,
            globals_=group.globals,
            shards=[shards[i] for i in group.shards],
            tensors=[
                TensorEntry(n, plan.specs[n].layout, plan.specs[n].shape, spans(plan.spans[n]))
                for n in group.tensors
            ],
            experts=[
                ExpertEntry(lay, e, spans(plan.expert_spans[(lay, e)]), ())
                for lay, e in group.experts
            ],
        )
        data = dump_json(doc)
        name = sha256_hex(data)
        (tmp / f"{name}.bin").write_bytes(data)
        refs.append(IndexRef(name, len(data), group.layers, group.globals))
        fixed += len(data)
    tokenizer = None
    if info.tokenizer is not None:
        data = dump_json(info.tokenizer)
        if len(data) > plan.max_shard:
            raise SizeError(f"tokenizer spec is {len(data)} bytes, over the shard limit")
        tokenizer = ShardRef(sha256_hex(data), len(data))
        (tmp / f"{tokenizer.name}.bin").write_bytes(data)
        fixed += len(data)
    stats: dict[str, list[int]] = {}
    for spec in plan.specs.values():
        stat = stats.setdefault(spec.layout, [0, 0, 0])
        stat[0] += 1
        stat[1] += prod(spec.shape)
        stat[2] += spec.nbytes
    params = sum(s[1] for s in stats.values())
    weight_bytes = sum(s[2] for s in stats.values())
    manifest = Manifest(
        name=info.name,
        source=info.source,
        config=info.config,
        tokenizer=tokenizer,
        layouts={k: LayoutStat(*v) for k, v in stats.items()},
        bits_per_weight=round(8 * weight_bytes / params, 6),
        param_count=params,
        tensor_count=len(plan.specs),
        total_size=sum(s.size for s in shards) + fixed,
        shard_count=len(shards) + len(refs) + (tokenizer is not None),
        block_size=plan.block_size,
        alignment=plan.alignment,
        max_shard_size=plan.max_shard,
        mirrors=info.mirrors,
        index=tuple(refs),
    )
    (tmp / MANIFEST_NAME).write_bytes(manifest.to_bytes())
