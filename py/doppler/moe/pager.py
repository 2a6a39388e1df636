"""The expert pager: the experts a step routes to are in GPU slots before the step runs.

Experts live in *arenas* (GPU buffers of equal slots, each at most one binding) charged to
the GPU budget; each MoE layer uses one arena and has an offset table (expert id -> slot)
that the expert kernels read. When every expert fits, all are loaded once and nothing moves
(the forward pass needs no readback). Otherwise the forward pass stops after each MoE
layer's router, the pager reads the chosen ids back, and a miss is served from the RAM tier
(JS byte arrays under ``ram_budget``), else from OPFS or the network by the expert's own
byte range (verified by block hashes), then written into a slot the policy freed. The step
waits for that (correctness first); ``stats`` says how long.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from doppler.errors import BadRequest
from doppler.gpu.budget import GpuBudget
from doppler.jsffi import JsProxy, js, js_object
from doppler.model.weights import Piece
from doppler.moe.experts import ExpertCatalog, Key
from doppler.moe.policy import LRU, CachePolicy, CacheTooSmall, CycleLFU
from doppler.storage.tier import ShardTier

HALF_LIFE_TOKENS = 8.0  # cycle-lfu's decay (docs/moe-paging.md)
POLICIES = ("cycle-lfu", "lru")


@dataclass
class PagingStats:
    """Counters of one generation (``reset`` between them)."""

    gpu_hits: int = 0
    gpu_misses: int = 0
    gpu_evictions: int = 0
    ram_hits: int = 0
    ram_misses: int = 0
    ram_evictions: int = 0
    opfs_reads: int = 0
    network_fetches: int = 0
    bytes_uploaded: int = 0
    bytes_fetched: int = 0
    stall_ms: float = 0.0


@dataclass
class Arena:
    """One GPU buffer of ``slots`` expert slots and the policy that decides what stays."""

    buffer: JsProxy
    slots: int
    policy: CachePolicy | None  # None: everything resident, nothing evicted
    slot_of: dict[Key, int] = field(default_factory=dict)
    free: list[int] = field(default_factory=list)


class RamTier:
    """Recently used experts' bytes in JS memory, least recently used evicted first."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._items: OrderedDict[Key, tuple[JsProxy, int]] = OrderedDict()

    def get(self, key: Key) -> JsProxy | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: Key, data: JsProxy, size: int) -> int:
        """Keep ``data`` if it fits the budget; returns how many entries were evicted."""
        if size > self.budget:
            return 0
        evicted = 0
        while self.used + size > self.budget:
            _, (_, old) = self._items.popitem(last=False)
            self.used -= old
            evicted += 1
        self._items[key] = (data, size)
        self.used += size
        return evicted

    @property
    def count(self) -> int:
        return len(self._items)


@dataclass
class ExpertPager:
    catalog: ExpertCatalog
    arenas: list[Arena]
    arena_of: dict[int, int]  # layer -> arena index
    tables: dict[int, JsProxy]  # layer -> u32 [num_experts] word offsets of slots
    tier: ShardTier
    device: JsProxy
    ram: RamTier | None
    stats: PagingStats = field(default_factory=PagingStats)

    @property
    def resident(self) -> bool:
        """Every expert is on the GPU: the forward pass runs without stopping."""
        return all(arena.policy is None for arena in self.arenas)

    def arena(self, layer: int) -> JsProxy:
        return self.arenas[self.arena_of[layer]].buffer

    def slots_per_layer(self) -> int:
        """How many experts one layer can have resident at once."""
        return min(arena.slots for arena in self.arenas)

    def reset_stats(self) -> None:
        self.stats = PagingStats()

    def report(self, tokens: int) -> dict[str, Any]:
        """The ``done`` event's paging stats for a generation of ``tokens`` steps."""
        out: dict[str, Any] = asdict(self.stats)
        out["stall_ms"] = round(out["stall_ms"], 3)
        slot = self.catalog.geometry.slot_bytes
        resident = sum(len(arena.slot_of) for arena in self.arenas)
        out.update(
            resident=self.resident,
            resident_experts=resident,
            resident_bytes=resident * slot,
            total_experts=len(self.catalog.sources),
            gpu_slots=sum(arena.slots for arena in self.arenas),
            slot_bytes=slot,
            arena_bytes=sum(arena.slots for arena in self.arenas) * slot,
            ram_experts=self.ram.count if self.ram else 0,
            ram_bytes=self.ram.used if self.ram else 0,
            bytes_uploaded_per_token=round(self.stats.bytes_uploaded / max(tokens, 1)),
        )
        return out

    def place_all(self) -> dict[str, list[Piece]]:
        """Give every expert a slot and its table entry; returns the shard pieces to upload
        (the loader's uploader fetches whole shards, cheaper than one range per expert)."""
        slot_bytes = self.catalog.geometry.slot_bytes
        pieces: dict[str, list[Piece]] = {}
        offsets: dict[int, list[int]] = {}
        for key, source in self.catalog.sources.items():
            arena = self.arenas[self.arena_of[key[0]]]
            slot = arena.free.pop()
            arena.slot_of[key] = slot
            offsets.setdefault(key[0], [0] * self.catalog.num_experts)[key[1]] = (
                slot * slot_bytes // 4
            )
            position = slot * slot_bytes
            for span in source.spans:
                piece = Piece(span.offset, arena.buffer, position, span.size)
                pieces.setdefault(span.shard, []).append(piece)
                position += span.size
        for layer, words in offsets.items():
            self.device.queue.writeBuffer(
                self.tables[layer], 0, js.Uint32Array.new(js_object(words))
            )
        return pieces

    async def ensure(self, layer: int, experts: Iterable[int]) -> None:
        """Make ``layer``'s ``experts`` resident (and their table entries current)."""
        arena = self.arenas[self.arena_of[layer]]
        if arena.policy is None:
            return
        started = time.perf_counter()
        keys = [(layer, e) for e in dict.fromkeys(experts)]
        hits, misses = arena.policy.request(keys)
        self.stats.gpu_hits += len(hits)
        self.stats.gpu_misses += len(misses)
        if not misses:
            return
        slot_bytes = self.catalog.geometry.slot_bytes
        for victim in arena.policy.choose_victims(len(misses) * slot_bytes):
            arena.free.append(arena.slot_of.pop(victim))
            self.stats.gpu_evictions += 1
        fetched = await asyncio.gather(*(self._expert_bytes(key) for key in misses))
        for key, data in zip(misses, fetched, strict=True):
            self._place(arena, key, arena.free.pop(), data)
            arena.policy.admit(key)
        self.stats.stall_ms += (time.perf_counter() - started) * 1000

    def _place(self, arena: Arena, key: Key, slot: int, data: JsProxy) -> None:
        nbytes = self.catalog.sources[key].nbytes
        offset = slot * self.catalog.geometry.slot_bytes
        queue = self.device.queue
        queue.writeBuffer(arena.buffer, offset, data, 0, nbytes)
        queue.writeBuffer(
            self.tables[key[0]], key[1] * 4, js.Uint32Array.new(js_object([offset // 4]))
        )
        arena.slot_of[key] = slot
        self.stats.bytes_uploaded += nbytes

    async def _expert_bytes(self, key: Key) -> JsProxy:
        """The expert's verified bytes: RAM tier, else OPFS or the network by range."""
        if self.ram is not None:
            held = self.ram.get(key)
            if held is not None:
                self.stats.ram_hits += 1
                return held
            self.stats.ram_misses += 1
        source = self.catalog.sources[key]
        parts = []
        for span in source.spans:
            shard = source.index.shards[span.shard]
            fetched = await self.tier.get_range(
                span.shard,
                shard.size,
                block_size=source.index.block_size,
                blocks=shard.blocks,
                offset=span.offset,
                length=span.size,
            )
            if fetched.source == "network":
                self.stats.network_fetches += 1
                self.stats.bytes_fetched += fetched.fetched_bytes
            else:
                self.stats.opfs_reads += 1
            parts.append(fetched.data)
        data = parts[0] if len(parts) == 1 else _concat(parts, source.nbytes)
        if self.ram is not None:
            self.stats.ram_evictions += self.ram.put(key, data, source.nbytes)
        return data


def _concat(parts: list[JsProxy], nbytes: int) -> JsProxy:
    out = js.Uint8Array.new(nbytes)
    position = 0
    for part in parts:
        out.set(part, position)
        position += int(part.byteLength)
    return out


async def build_pager(
    catalog: ExpertCatalog,
    budget: GpuBudget,
    binding_limit: int,
    available: int,
    tier: ShardTier,
    *,
    ram_budget: int,
    policy: str,
    num_layers: int,
    upload: Callable[[dict[str, list[Piece]]], Any],
) -> ExpertPager:
    """Arenas for ``available`` GPU bytes: every expert when they all fit (loaded now through
    ``upload``, the loader's shard uploader), else as many slots as fit, filled on demand."""
    if policy not in POLICIES:
        raise BadRequest(f"unknown pagingPolicy {policy!r} (choose from {POLICIES})")
    slot = catalog.geometry.slot_bytes
    per_binding = binding_limit // slot
    if per_binding < catalog.top_k:
        raise CacheTooSmall(
            f"a token needs {catalog.top_k} experts of {slot / 2**20:.1f} MiB in one binding,"
            f" but this GPU binds at most {binding_limit / 2**20:.0f} MiB"
        )
    layer_slots = catalog.num_experts
    usage = js.GPUBufferUsage.STORAGE | js.GPUBufferUsage.COPY_DST
    moe_layers = catalog.layers
    resident = catalog.total_bytes <= available and per_binding >= layer_slots
    if resident:
        layers_per_arena = per_binding // layer_slots
        groups = [
            moe_layers[i : i + layers_per_arena]
            for i in range(0, len(moe_layers), layers_per_arena)
        ]
        sizes = [len(group) * layer_slots for group in groups]
    else:
        total_slots = min(available // slot, len(catalog.sources))
        count = min(len(moe_layers), max(1, -(-total_slots // per_binding)))
        groups = [moe_layers[i::count] for i in range(count)]
        sizes = [min(per_binding, total_slots // count)] * count
        top_k = catalog.top_k
        if min(sizes) < top_k:
            raise CacheTooSmall(
                f"the GPU budget leaves {available / 2**20:.1f} MiB for experts: "
                f"{min(sizes)} slots of {slot / 2**20:.2f} MiB per layer, but a token needs "
                f"{top_k}; raise gpuBudgetBytes"
            )
    arenas, arena_of = [], {}
    for number, (group, slots) in enumerate(zip(groups, sizes, strict=True)):
        buffer = budget.create_buffer(slots * slot, usage, "experts", f"expert arena {number}")
        keys = {(layer, e): slot for layer in group for e in range(catalog.num_experts)}
        chosen = None if resident else _policy(policy, slots * slot, keys, num_layers)
        arenas.append(Arena(buffer, slots, chosen, free=list(range(slots))[::-1]))
        arena_of.update({layer: number for layer in group})
    tables = {
        layer: budget.create_buffer(
            catalog.num_experts * 4, usage, "experts", f"expert table {layer}"
        )
        for layer in moe_layers
    }
    pager = ExpertPager(
        catalog,
        arenas,
        arena_of,
        tables,
        tier,
        budget.device,
        RamTier(ram_budget) if ram_budget > 0 else None,
    )
    if resident:
        await upload(pager.place_all())
    return pager


def _policy(name: str, capacity: int, sizes: dict[Key, int], num_layers: int) -> CachePolicy:
    if name == "lru":
        return LRU(capacity, sizes)
    return CycleLFU(capacity, sizes, half_life=HALF_LIFE_TOKENS * num_layers, num_layers=num_layers)
