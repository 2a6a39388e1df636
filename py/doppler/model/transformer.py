"""The decoder-only transformer (Llama, Qwen2, Gemma 3; Mixtral, Qwen2/3-MoE, OLMoE) as
prepared GPU plans.

The architecture config says everything that differs between these families (q/k/v bias,
q/k norms, post-norms, norm weight offset, activation, sliding layers with their own RoPE
base, embedding scale, soft-capping, tied embeddings), so one builder serves them; MoE
layers use :func:`doppler.model.moe_block.moe_ffn` where dense ones use :func:`_ffn`, and
the place for a per-layer LoRA delta is after each projection in :func:`_project`. When the
experts are paged, a pass runs in segments that end at each MoE layer's routing (see
:meth:`Model._record`).

The plans share the weights and the KV cache: ``decode`` runs one token (its id is the one
the GPU sampler wrote) and the ``prefill`` plans run a chunk of prompt tokens at once with
matrix-matrix products, so each weight is read once per chunk instead of once per token:
a long chunk (``prefillTokens`` at load, PREFILL_TOKENS by default), where the GPU is
busiest, and a short one (SHORT_PREFILL_TOKENS) for short prompts and remainders, where a
long pass would mostly compute padding. Prefill plans end at the last layer; ``head`` (final
norm + LM head) turns their hidden states into logits where a caller wants them.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from doppler.errors import BadRequest, DopplerError
from doppler.format.config import ArchConfig
from doppler.gpu.budget import GpuBudget
from doppler.gpu.device import Gpu
from doppler.gpu.plan import Plan
from doppler.gpu.shaders import PipelineCache
from doppler.jsffi import JsProxy, js, js_object
from doppler.model import ops
from doppler.model.loader import LoadedModel, Progress
from doppler.model.moe_block import MoeScratch, allocate_scratch, moe_ffn
from doppler.model.rope import inv_freq
from doppler.model.weights import Weight
from doppler.moe.pager import ExpertPager, build_pager

RUNNABLE_ARCHS = ("llama", "qwen2", "gemma3", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe")
PLAN_RESERVE_BYTES = 2 << 20  # of gpuBudgetBytes kept from the expert arenas for plan uniforms
RING = 64  # sampled-token ring slots; more than the passes ever in flight
# decode passes submitted ahead of the token being read back: one hides Python's time; more
# hide the readback's own latency and the GPU process's encoding of the next pass as well
DECODE_AHEAD = 2
# Tokens per pass of the long prefill plan (load's prefillTokens): on an H100 a Gemma-3-1B
# prompt ran 2.7k tok/s in 32-token passes, 6.3k in 128-token and 8.3k in 256-token ones
# (docs/benchmarks.md): a pass costs a few ms of dispatch overhead whatever its length.
PREFILL_TOKENS = 256
SHORT_PREFILL_TOKENS = 32  # the short plan: one token tile of matmul_quant.wgsl
MAX_PREFILL_TOKENS = 1024
# a prompt's last, partial chunk runs as one padded pass of the long plan if it is longer than
# half of one, else of the short plan if it has at least this many tokens (the padding's KV
# entries lie past the prompt and are overwritten before anything reads them); fewer run as
# single-token passes, which cost less than a whole chunk
PADDED_CHUNK_MIN = 4
SPLIT_LEN = 64  # attention: keys per split-K workgroup (more where the partials grow large)
PARTIALS_BYTES = 64 << 20  # split-K partials of a pass at most


class UnsupportedModel(DopplerError):
    code = "unsupported_architecture"


@dataclass
class Shared:
    """State every plan uses: the KV cache, RoPE frequencies, the sampled-token ring."""

    kv: list[tuple[JsProxy, JsProxy]] = field(default_factory=list)
    inv_freq: dict[str, JsProxy] = field(default_factory=dict)
    ring: JsProxy | None = None
    experts: ExpertPager | None = None


@dataclass
class Activations:
    """f32 scratch for ``n`` tokens, plus the pass's inputs: token ids and positions."""

    n: int
    ids: JsProxy
    positions: JsProxy
    x: JsProxy
    xn: JsProxy
    q: JsProxy
    k: JsProxy
    v: JsProxy
    qn: JsProxy
    kn: JsProxy
    attn: JsProxy
    tmp: JsProxy
    gate: JsProxy
    up: JsProxy
    act: JsProxy
    partials: JsProxy  # split-K attention partials
    moe: MoeScratch | None  # MoE models only
    logits: JsProxy | None  # passes with a head only


@dataclass
class Pass:
    plan: Plan
    act: Activations
    head_start: int  # dispatches from here on compute logits (the decode plan's head)


@dataclass
class Model:
    """A model ready to run. ``decode`` embeds the id in its ``ids`` buffer (where the GPU
    sampler writes) and leaves logits, which ``sampler`` turns into the next id on the GPU,
    so consecutive tokens never wait for a round trip through the CPU."""

    config: ArchConfig
    context_length: int
    gpu: Gpu
    budget: GpuBudget
    decode: Pass
    prefill: list[Pass]  # shortest chunk first
    head: Pass  # final norm + LM head over the short prefill plan's activations
    sampler: Plan  # two-stage: greedy and 0 < top_k <= ops.SAMPLE_K (the common requests)
    sampler_full: Plan  # any other options: scans the whole vocabulary
    ring: JsProxy  # where the sampler stores each step's id
    experts: ExpertPager | None
    decode_cpu_s: float = 0.0  # CPU (Python + FFI) time spent recording decode steps
    decode_steps: int = 0
    prefill_cpu_s: float = 0.0  # CPU time spent recording and submitting the prompt's passes
    _readbacks: list[JsProxy] = field(default_factory=list)
    _logits_readback: JsProxy | None = None  # made on the first call of logits()

    @property
    def dispatches_per_token(self) -> int:
        return len(self.decode.plan.dispatches) + len(self.sampler.dispatches)

    async def logits(self, ids: list[int]) -> list[list[float]]:
        """Logits after each of ``ids`` (a fresh sequence from position 0): the head runs
        on each prefill pass's hidden states, up to ``head``'s token count at a time."""
        device, head = self.gpu.device, self.head
        row_bytes = self.config.hidden_size * 4
        rows: list[list[float]] = []
        for start, count, run in self._passes(len(ids)):
            encoder = await self._record(run, start, ids[start : start + count])
            if run is self.decode:
                rows += await self._read_logits(encoder, run.act, 1)
                continue
            device.queue.submit(js_object([encoder.finish()]))
            for first in range(0, count, head.act.n):
                n = min(head.act.n, count - first)
                encoder = device.createCommandEncoder()
                if run.act is not head.act:
                    x, head_x = run.act.x, head.act.x
                    encoder.copyBufferToBuffer(x, first * row_bytes, head_x, 0, n * row_bytes)
                head.plan.encode(encoder, device, None)
                rows += await self._read_logits(encoder, head.act, n)
        return rows

    async def _read_logits(self, encoder: JsProxy, act: Activations, n: int) -> list[list[float]]:
        """Submit ``encoder`` with a copy of the first ``n`` rows of ``act``'s logits; read
        them back (soft-capped where the model caps)."""
        vocab = self.config.vocab_size
        nbytes = n * vocab * 4
        if self._logits_readback is None:
            usage = js.GPUBufferUsage.MAP_READ | js.GPUBufferUsage.COPY_DST
            size = self.head.act.n * vocab * 4
            self._logits_readback = self.budget.create_buffer(
                size, usage, "scratch", "logits readback"
            )
        readback = self._logits_readback
        encoder.copyBufferToBuffer(act.logits, 0, readback, 0, nbytes)
        self.gpu.device.queue.submit(js_object([encoder.finish()]))
        await readback.mapAsync(js.GPUMapMode.READ, 0, nbytes)
        flat = js.Float32Array.new(readback.getMappedRange(0, nbytes)).to_py().tolist()
        readback.unmap()
        return [self._cap(flat[t * vocab : (t + 1) * vocab]) for t in range(n)]

    async def generate(
        self, prompt: list[int], sampling: ops.Sampling, max_tokens: int
    ) -> AsyncIterator[int]:
        """Yield up to ``max_tokens`` sampled ids. Up to DECODE_AHEAD passes are submitted
        past the token being read back, so the GPU never waits for Python or for a readback's
        latency; the consumer stops early by closing the iterator (the passes still in flight
        only write KV entries past the end, which later passes overwrite before reading)."""
        queue = self.gpu.device.queue
        started = time.perf_counter()
        for start, count, run in self._passes(len(prompt) - 1):
            # Only the last prompt token's logits matter, and the sampled pass makes those.
            encoder = await self._record(run, start, prompt[start : start + count], logits=False)
            queue.submit(js_object([encoder.finish()]))
        in_flight = [await self._submit_sampled(len(prompt) - 1, prompt[-1], sampling, 0)]
        self.prefill_cpu_s = time.perf_counter() - started
        self.decode_cpu_s, self.decode_steps = 0.0, 0
        submitted = 1
        reading = None  # the readback being mapped
        try:
            for _step in range(max_tokens):
                while submitted < max_tokens and len(in_flight) <= DECODE_AHEAD:
                    started = time.perf_counter()
                    position = len(prompt) + submitted - 1
                    in_flight.append(
                        await self._submit_sampled(position, None, sampling, submitted)
                    )
                    self.decode_cpu_s += time.perf_counter() - started
                    self.decode_steps += 1
                    submitted += 1
                reading = in_flight.pop(0)
                await reading.mapAsync(js.GPUMapMode.READ, 0, 4)
                token = js.Uint32Array.new(reading.getMappedRange(0, 4))[0]
                reading.unmap()
                self._readbacks.append(reading)
                reading = None
                yield int(token)
        finally:  # a stop or a cancel: what is still in flight is never read
            self._readbacks += in_flight
            if reading is not None:  # its map was interrupted and cannot be undone
                self.budget.destroy(reading)

    def _passes(self, count: int) -> list[tuple[int, int, Pass]]:
        """Cover positions [0, count): whole chunks of the long plan, a remainder of more
        than half of one as one padded pass of it, then the short plan's chunks (the last
        one padded if it has PADDED_CHUNK_MIN tokens), then single-token passes. With paged
        experts, only plans whose chunk's experts fit a layer's GPU slots run."""
        passes, start = [], 0
        plans = [run for run in self.prefill if self._experts_fit(run.act.n)]
        for run in reversed(plans):  # the longest first
            n = run.act.n
            while count - start >= n:
                passes.append((start, n, run))
                start += n
            rest = count - start
            if rest > (n // 2 if run is not plans[0] else PADDED_CHUNK_MIN - 1):
                passes.append((start, rest, run))
                start = count
        return passes + [(s, 1, self.decode) for s in range(start, count)]

    def _experts_fit(self, tokens: int) -> bool:
        """Whether the experts one pass of ``tokens`` tokens may route to fit a layer's GPU
        slots (always, when every expert is resident)."""
        experts, moe = self.experts, self.config.moe
        if experts is None or experts.resident or moe is None:
            return True
        return experts.slots_per_layer() >= min(moe.num_experts, tokens * moe.top_k)

    def _cap(self, row: list[float]) -> list[float]:
        cap = self.config.final_softcap
        return [cap * math.tanh(v / cap) for v in row] if cap else row

    async def time_prompt(self, prompt: list[int]) -> dict[str, float]:
        """A diagnostic: the prompt passes of a generation from ``prompt``, submitted as
        :meth:`generate` submits them (resident experts only): GPU ms from the first pass's
        start to the last one's end (timestamp queries), against wall ms from the first
        record to the work's completion."""
        from doppler_js import TimestampPairs  # type: ignore[import-not-found]

        passes = self._passes(len(prompt) - 1)
        stamps = TimestampPairs.new(self.gpu.device, 1)
        started = time.perf_counter()
        for i, (start, n, run) in enumerate(passes):
            first, last = i == 0, i == len(passes) - 1
            # a pass's timestampWrites must name an index: the others get none
            timestamps = stamps.writes(0, first, last) if first or last else None
            encoder = await self._record(run, start, prompt[start : start + n], False, timestamps)
            if last:
                stamps.resolve(encoder)
            self.gpu.device.queue.submit(js_object([encoder.finish()]))
        gpu_ms = (await stamps.read())[0]
        wall_ms = 1000 * (time.perf_counter() - started)
        stamps.destroy()
        return {"passes": len(passes), "gpuMs": gpu_ms, "wallMs": wall_ms}

    async def _record(
        self,
        run: Pass,
        start: int,
        ids: list[int] | None,
        logits: bool = True,
        timestamps: JsProxy | None = None,
    ) -> JsProxy:
        """Write the pass's inputs and record its plan (without the LM head unless
        ``logits``); ``ids=None`` keeps the id the sampler left in the decode pass's ``ids``
        buffer. With paged experts, every segment up to a MoE layer's routing is submitted
        and its expert ids read back so the pager can make them resident; the encoder
        returned holds the last segment."""
        device = self.gpu.device
        if ids is not None:  # a partial chunk is padded with token 0
            device.queue.writeBuffer(run.act.ids, 0, _u32(ids + [0] * (run.act.n - len(ids))))
        device.queue.writeBuffer(run.act.positions, 0, _u32(list(range(start, start + run.act.n))))
        begin = 0
        for end, layer in run.plan.marks:
            encoder = device.createCommandEncoder()
            run.plan.encode(encoder, device, None, begin, end)
            chosen = await self._read_expert_ids(encoder, run.act)
            assert self.experts is not None
            await self.experts.ensure(layer, chosen)
            begin = end
        encoder = device.createCommandEncoder()
        end = None if logits else run.head_start
        run.plan.encode(encoder, device, None, begin, end, timestamps)
        return encoder

    async def _read_expert_ids(self, encoder: JsProxy, act: Activations) -> list[int]:
        """Submit ``encoder`` with a copy of the pass's routed expert ids; wait for them."""
        assert act.moe is not None
        nbytes = act.moe.ids_readback.size
        encoder.copyBufferToBuffer(act.moe.routing.ids, 0, act.moe.ids_readback, 0, nbytes)
        self.gpu.device.queue.submit(js_object([encoder.finish()]))
        await act.moe.ids_readback.mapAsync(js.GPUMapMode.READ, 0, nbytes)
        chosen = js.Uint32Array.new(act.moe.ids_readback.getMappedRange(0, nbytes)).to_py()
        act.moe.ids_readback.unmap()
        return [int(e) for e in chosen]

    async def _submit_sampled(
        self, position: int, token: int | None, sampling: ops.Sampling, step: int
    ) -> JsProxy:
        encoder = await self._record(self.decode, position, None if token is None else [token])
        sampler = self.sampler if sampling.two_stage else self.sampler_full
        sampler.encode(encoder, self.gpu.device, ops.StepState(sampling, step))
        readback = self._readbacks.pop() if self._readbacks else self._new_readback()
        slot = (step % RING) * 4
        encoder.copyBufferToBuffer(self.ring, slot, readback, 0, 4)
        self.gpu.device.queue.submit(js_object([encoder.finish()]))
        return readback

    def _new_readback(self) -> JsProxy:
        usage = js.GPUBufferUsage.MAP_READ | js.GPUBufferUsage.COPY_DST
        return self.budget.create_buffer(4, usage, "scratch", "token readback")


def _u32(values: list[int]) -> JsProxy:
    return js.Uint32Array.new(js_object(values))


@dataclass(frozen=True)
class PagingOptions:
    """How a MoE model keeps its experts: RAM tier bytes (0 = none) and the GPU policy."""

    ram_budget: int = 0
    policy: str = "cycle-lfu"


async def build_model(
    loaded: LoadedModel,
    gpu: Gpu,
    budget: GpuBudget,
    pipelines: PipelineCache,
    context_length: int | None,
    paging: PagingOptions | None = None,
    progress: Progress | None = None,
    prefill_tokens: int | None = None,
) -> Model:
    cfg = loaded.manifest.config
    if cfg.arch not in RUNNABLE_ARCHS or cfg.mla is not None:
        raise UnsupportedModel(
            f"architecture {cfg.arch!r} does not run yet (runs: {', '.join(RUNNABLE_ARCHS)})"
        )
    ctx = int(context_length or min(cfg.max_position, 4096))
    if not 1 <= ctx <= cfg.max_position:
        raise BadRequest(f"contextLength {ctx} is outside 1..{cfg.max_position} for this model")
    chunk = int(prefill_tokens or PREFILL_TOKENS)
    if not 2 <= chunk <= MAX_PREFILL_TOKENS:
        raise BadRequest(f"prefillTokens {chunk} is outside 2..{MAX_PREFILL_TOKENS}")
    shared = _allocate_shared(cfg, ctx, budget)
    chunk = min(chunk, max(ctx, SHORT_PREFILL_TOKENS))  # no pass longer than the context
    chunks = sorted({min(chunk, SHORT_PREFILL_TOKENS), chunk})
    # logits: the decode step's, and the head's over the short plan's activations
    acts = [_allocate_activations(cfg, n, budget, ctx, n <= chunks[0]) for n in (1, *chunks)]
    if loaded.experts is not None:
        paging = paging or PagingOptions()
        shared.experts = await build_pager(
            loaded.experts,
            budget,
            gpu.limits["maxStorageBufferBindingSize"],
            budget.limit - budget.total - PLAN_RESERVE_BYTES,
            loaded.tier,
            ram_budget=paging.ram_budget,
            policy=paging.policy,
            num_layers=cfg.num_layers,
            upload=lambda pieces: loaded.upload(gpu, pieces, progress or (lambda _event: None)),
        )

    async def prepared(act: Activations, layers: bool, head: bool) -> Pass:
        plan = Plan(f"{loaded.manifest.name} x{act.n}{'' if layers else ' head'}", gpu.features)
        if layers:
            _build(plan, cfg, loaded.weights, act, shared, ctx)
        head_start = len(plan.dispatches)
        if head:
            _head(plan, cfg, loaded.weights, act)
        await plan.finish(pipelines, budget)
        return Pass(plan, act, head_start)

    decode = await prepared(acts[0], layers=True, head=True)
    prefill = [await prepared(act, layers=True, head=False) for act in acts[1:]]
    head = await prepared(acts[1], layers=False, head=True)
    samplers = []
    for candidates in (_candidates(budget, cfg.vocab_size), None):
        sampler = Plan(f"{loaded.manifest.name} sampler{'' if candidates else ' (full)'}")
        ops.sample(
            sampler,
            decode.act.logits,
            decode.act.ids,
            shared.ring,
            cfg.vocab_size,
            RING,
            candidates,
        )
        await sampler.finish(pipelines, budget, ops.StepState(ops.Sampling()))
        samplers.append(sampler)
    return Model(
        cfg, ctx, gpu, budget, decode, prefill, head, *samplers, shared.ring, shared.experts
    )


def _candidates(budget: GpuBudget, vocab: int) -> ops.Candidates:
    blocks = ops.Candidates.blocks(vocab)
    return ops.Candidates(
        value=_storage(budget, blocks * ops.SAMPLE_K, "sample candidate logits"),
        index=_storage(budget, blocks * ops.SAMPLE_K, "sample candidate ids"),
        overflow=_storage(budget, blocks, "sample candidate overflow"),
    )


def _storage(budget: GpuBudget, count: int, label: str, kind: str = "scratch") -> JsProxy:
    usage = js.GPUBufferUsage
    flags = usage.STORAGE | usage.COPY_DST | usage.COPY_SRC
    return budget.create_buffer(count * 4, flags, kind, label)


def _allocate_shared(cfg: ArchConfig, ctx: int, budget: GpuBudget) -> Shared:
    kv_size = cfg.num_kv_heads * cfg.head_dim
    shared = Shared(ring=_storage(budget, RING, "sampled tokens"))
    for layer in range(cfg.num_layers):
        shared.kv.append(
            (
                _storage(budget, kv_size * ctx, f"k cache {layer}", "kv"),
                _storage(budget, kv_size * ctx, f"v cache {layer}", "kv"),
            )
        )
    for kind, theta, scaling in _rope_bases(cfg):
        values = inv_freq(cfg.rope.dim, theta, scaling)
        buffer = _storage(budget, len(values), f"inv_freq {kind}")
        budget.device.queue.writeBuffer(buffer, 0, js.Float32Array.new(js_object(values)))
        shared.inv_freq[kind] = buffer
    return shared


def _splits(cfg: ArchConfig, n: int, ctx: int) -> tuple[int, int]:
    """(keys per split, splits per query) of split-K attention for passes of ``n`` tokens: a
    workgroup per SPLIT_LEN keys keeps the GPU busy and each workgroup's key loop short (also
    in prefill, where a workgroup per (head, token) alone waits on long serial loops);
    longer splits where the partials would pass PARTIALS_BYTES."""
    split_len = SPLIT_LEN
    while n * cfg.num_heads * -(-ctx // split_len) * (cfg.head_dim + 2) * 4 > PARTIALS_BYTES:
        split_len *= 2
    return split_len, -(-ctx // split_len)


def _allocate_activations(
    cfg: ArchConfig, n: int, budget: GpuBudget, ctx: int, logits: bool
) -> Activations:
    h, d, ff = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    q_size, kv_size = cfg.num_heads * d, cfg.num_kv_heads * d

    def f32(count: int, label: str) -> JsProxy:
        return _storage(budget, n * count, f"{label} x{n}")

    return Activations(
        n=n,
        ids=f32(1, "token ids"),
        positions=f32(1, "positions"),
        x=f32(h, "x"),
        xn=f32(h, "xn"),
        q=f32(q_size, "q"),
        k=f32(kv_size, "k"),
        v=f32(kv_size, "v"),
        qn=f32(q_size, "qn"),
        kn=f32(kv_size, "kn"),
        attn=f32(q_size, "attn"),
        tmp=f32(h * max(ops.k_slices(q_size, n), ops.k_slices(ff, n)), "tmp"),  # K slices
        gate=f32(ff, "gate"),
        up=f32(ff, "up"),
        act=f32(ff, "act"),
        partials=f32(cfg.num_heads * _splits(cfg, n, ctx)[1] * (d + 2), "attention partials"),
        moe=allocate_scratch(cfg, n, budget),
        logits=f32(cfg.vocab_size, "logits") if logits else None,
    )


def _rope_bases(cfg: ArchConfig) -> list[tuple[str, float, dict[str, Any] | None]]:
    scaling = cfg.rope.scaling
    hf_scaling = None
    if scaling is not None:
        if scaling.type not in ("linear", "llama3"):
            raise UnsupportedModel(f"rope scaling {scaling.type!r} does not run yet")
        hf_scaling = {
            "rope_type": scaling.type,
            "factor": scaling.factor,
            "low_freq_factor": scaling.low_freq_factor,
            "high_freq_factor": scaling.high_freq_factor,
            "original_max_position_embeddings": scaling.original_max_position,
        }
    bases = [("full", cfg.rope.theta, hf_scaling)]
    if "sliding" in cfg.layer_types:
        bases.append(("sliding", cfg.rope.local_theta or cfg.rope.theta, None))
    return bases


def _build(
    plan: Plan,
    cfg: ArchConfig,
    w: dict[str, Weight],
    a: Activations,
    shared: Shared,
    ctx: int,
) -> None:
    """Add the layers of the forward pass to ``plan`` (hidden states in ``a.x``)."""
    n, folds = a.n, _folds(cfg, a.n)
    direct = folds and not cfg.norm.post_norms  # projections add themselves into x
    ops.embed(plan, w["embed.weight"], a.ids, a.x, cfg.embedding_scale, n)
    for layer in range(cfg.num_layers):
        p = f"layers.{layer}."
        normed = _normed(plan, cfg, w, a, p + "attn_norm.weight", folds)
        slices = _attention(plan, cfg, w, a, shared, layer, ctx, normed, direct)
        _residual(plan, cfg, w, a, p + "post_attn_norm.weight", direct, slices)
        moe = cfg.moe is not None and cfg.moe.is_moe_layer(layer)
        normed = _normed(plan, cfg, w, a, p + "ffn_norm.weight", folds and not moe)
        if moe:
            assert a.moe is not None and shared.experts is not None
            moe_ffn(plan, cfg, w, a.xn, a.tmp, n, layer, a.moe, shared.experts)
            slices = 1
        else:
            slices = _ffn(plan, cfg, w, a, p + "ffn.", normed, direct)
        _residual(plan, cfg, w, a, p + "post_ffn_norm.weight", direct and not moe, slices)


def _head(plan: Plan, cfg: ArchConfig, w: dict[str, Weight], a: Activations) -> None:
    """Final norm and LM head: ``a.logits`` from the hidden states in ``a.x``."""
    assert a.logits is not None
    x, fold = _normed(plan, cfg, w, a, "output_norm.weight", _folds(cfg, a.n))
    head = w["embed.weight"] if cfg.tie_embeddings else w["lm_head.weight"]
    ops.matvec(plan, head, x, a.logits, a.n, fold)


def _folds(cfg: ArchConfig, n: int) -> bool:
    """Decode passes fold norms, residual adds and activations into the matvecs (whose vec4
    loads need every projection's input length to be a multiple of 4)."""
    inputs = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads * cfg.head_dim)
    return n == 1 and all(size % 4 == 0 for size in inputs)


def _normed(
    plan: Plan, cfg: ArchConfig, w: dict[str, Weight], a: Activations, norm: str, fold: bool
) -> tuple[JsProxy, ops.Fold]:
    """The projections' input after RMSNorm ``norm``: x with the norm folded into each
    projection, or xn from one rmsnorm dispatch."""
    eps, offset = cfg.norm.eps, cfg.norm.weight_offset
    if fold:
        return a.x, ops.Fold(norm=w[norm], eps=eps, offset=offset)
    ops.rmsnorm(plan, a.x, w[norm], a.xn, a.n, eps, offset)
    return a.xn, ops.Fold()


def _residual(
    plan: Plan,
    cfg: ArchConfig,
    w: dict[str, Weight],
    a: Activations,
    norm: str,
    direct: bool,
    slices: int,
) -> None:
    """x += block output in tmp (its ``slices`` K slices summed; through the post-norm where
    the model has one, e.g. Gemma), unless the block's last projection added itself into x
    (``direct``)."""
    if direct:
        return
    if cfg.norm.post_norms:
        eps, offset = cfg.norm.eps, cfg.norm.weight_offset
        ops.rmsnorm(plan, a.tmp, w[norm], a.x, a.n, eps, offset, accumulate=True, slices=slices)
    else:
        ops.add(plan, a.tmp, a.x, a.n * cfg.hidden_size, slices=slices)


def _project(
    plan: Plan,
    w: dict[str, Weight],
    name: str,
    x: JsProxy,
    y: JsProxy,
    n: int,
    fold: ops.Fold | None = None,
    slices: int = 1,
) -> None:
    """y = W x + bias (the bias into the first of y's K ``slices``)."""
    ops.matvec(plan, w[name + ".weight"], x, y, n, fold, slices)
    _bias(plan, w, name, y, n)


def _bias(plan: Plan, w: dict[str, Weight], name: str, y: JsProxy, n: int) -> None:
    """y += the projection's bias (one row per token), where it has one."""
    bias = w.get(name + ".bias")
    if bias is not None:
        rows = w[name + ".weight"].rows
        ops.add(plan, bias.parts[0].buffer, y, n * rows, period=bias.row_len)


def _attention(
    plan: Plan,
    cfg: ArchConfig,
    w: dict[str, Weight],
    a: Activations,
    shared: Shared,
    layer: int,
    ctx: int,
    normed: tuple[JsProxy, ops.Fold],
    direct: bool,
) -> int:
    """Attention of the normed input ``normed`` (see :func:`_normed`) into tmp, or added
    into x by the output projection where ``direct``; returns the K slices left in tmp."""
    p = f"layers.{layer}.attn."
    n, d, (x, fold) = a.n, cfg.head_dim, normed
    sliding = cfg.layer_types[layer] == "sliding"
    freqs = shared.inv_freq["sliding" if sliding else "full"]
    interleaved = cfg.rope.style == "interleaved"
    routed = fold.mode() != 0 and "subgroups" in plan.features  # decode: kv rows routed
    # without k norm or biases, k is rotated and k/v stored into the cache by the projection
    to_cache = (
        routed
        and cfg.qk_norm == "none"
        and cfg.rope.dim % 4 == 0
        and not any(p + f"{m}.bias" in w or len(w[p + f"{m}.weight"].parts) > 1 for m in "kv")
    )
    rope_fold = (freqs, cfg.rope.dim, interleaved)
    cache_fold = replace(fold, cache=(a.positions, d, ctx), rope=rope_fold)
    k_cache, v_cache = shared.kv[layer]
    if routed and p + "qkv.weight" in w:  # q, k and v in one dispatch
        q_rows, kv_rows = w[p + "q.weight"].rows, w[p + "k.weight"].rows
        outs = (k_cache, v_cache) if to_cache else (a.k, a.v)
        route = ops.KvRoute(*outs, q_rows, q_rows + kv_rows)
        ops.matvec(
            plan,
            w[p + "qkv.weight"],
            x,
            a.q,
            n,
            replace(cache_fold if to_cache else fold, kv=route),
        )
        for m, out in (("q", a.q), ("k", a.k), ("v", a.v)):
            _bias(plan, w, p + m, out, n)
    elif to_cache:
        _project(plan, w, p + "q", x, a.q, n, fold)
        rows = w[p + "k.weight"].rows
        k_fold = replace(cache_fold, kv=ops.KvRoute(k_cache, v_cache, 0, rows))
        ops.matvec(plan, w[p + "k.weight"], x, a.k, n, k_fold)
        v_fold = replace(cache_fold, rope=None, kv=ops.KvRoute(k_cache, v_cache, 0, 0))
        ops.matvec(plan, w[p + "v.weight"], x, a.v, n, v_fold)
    else:
        for m, out in (("q", a.q), ("k", a.k), ("v", a.v)):
            _project(plan, w, p + m, x, out, n, fold)
    fused = cfg.qk_norm in ("none", "head")  # per-head norms and RoPE inside the kernels
    split_len, n_splits = _splits(cfg, n, ctx)
    shape = ops.AttentionShape(
        n_tokens=n,
        n_heads=cfg.num_heads,
        n_kv_heads=cfg.num_kv_heads,
        head_dim=d,
        max_ctx=ctx,
        window=cfg.sliding_window if sliding and cfg.sliding_window else 0,
        scale=cfg.attn_scale,
        softcap=cfg.attn_softcap or 0.0,
        split_len=split_len,
        n_splits=n_splits,
        rope_dim=cfg.rope.dim if fused else 0,
        interleaved=interleaved,
        q_normed=cfg.qk_norm == "head",
        eps=cfg.norm.eps,
        norm_offset=cfg.norm.weight_offset,
    )
    eps, offset = cfg.norm.eps, cfg.norm.weight_offset
    q, rope = a.q, None
    if fused:  # k norm + RoPE + the cache write in one kernel; queries in attention's
        q_norm = w[p + "q_norm.weight"].parts[0].buffer if shape.q_normed else None
        k_norm = w[p + "k_norm.weight"] if shape.q_normed else None
        rope = (freqs, q_norm)
        if not to_cache:
            kv = (k_cache, v_cache)
            ops.rope_store(plan, a.positions, freqs, (a.k, a.v), kv, shape, k_norm)
    else:  # a norm over the whole projection (OLMoE)
        ops.rmsnorm(plan, a.q, w[p + "q_norm.weight"], a.qn, n, eps, offset)
        ops.rmsnorm(plan, a.k, w[p + "k_norm.weight"], a.kn, n, eps, offset)
        q = a.qn
        rope_shape = (n, cfg.num_heads, cfg.num_kv_heads, d, cfg.rope.dim)
        ops.rope(plan, a.positions, freqs, a.qn, a.kn, rope_shape, shape.interleaved)
        ops.kv_write(plan, a.kn, a.v, a.positions, (k_cache, v_cache), shape)
    ops.attention(plan, q, (k_cache, v_cache), a.positions, a.attn, shape, a.partials, rope)
    slices = ops.k_slices(w[p + "o.weight"].row_len, n)
    out = a.x if direct else a.tmp
    _project(plan, w, p + "o", a.attn, out, n, ops.Fold(accumulate=direct), slices)
    return slices


def _ffn(
    plan: Plan,
    cfg: ArchConfig,
    w: dict[str, Weight],
    a: Activations,
    p: str,
    normed: tuple[JsProxy, ops.Fold],
    direct: bool,
) -> int:
    """The gated feed-forward block of ``normed`` into tmp, or added into x where ``direct``;
    decode folds the activation into the up projection, or with subgroups computes gate and
    up in one dispatch where they share a buffer. Returns the K slices left in tmp."""
    n, (x, fold) = a.n, normed
    if fold.mode() and "subgroups" in plan.features and p + "gate_up.weight" in w:
        pair = replace(fold, pair=w[p + "gate.weight"].rows, activation=cfg.activation)
        ops.matvec(plan, w[p + "gate_up.weight"], x, a.act, n, pair)
    elif _folds(cfg, n):
        ops.matvec(plan, w[p + "gate.weight"], x, a.gate, n, fold)
        gated = replace(fold, gate=a.gate, activation=cfg.activation)
        ops.matvec(plan, w[p + "up.weight"], x, a.act, n, gated)
    else:
        ops.matvec(plan, w[p + "gate.weight"], x, a.gate, n, fold)
        ops.matvec(plan, w[p + "up.weight"], x, a.up, n, fold)
        ops.gated(plan, a.gate, a.up, a.act, n * cfg.intermediate_size, cfg.activation)
    out = a.x if direct else a.tmp
    slices = ops.k_slices(w[p + "down.weight"].row_len, n)
    ops.matvec(plan, w[p + "down.weight"], a.act, out, n, ops.Fold(accumulate=direct), slices)
    return slices
