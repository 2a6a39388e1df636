"""The dense decoder-only transformer (Llama, Qwen2, Gemma 3) as one prepared GPU plan.

The architecture config says everything that differs between these families (q/k/v bias,
q/k norms, post-norms, norm weight offset, activation, sliding layers with their own RoPE
base, embedding scale, soft-capping, tied embeddings), so one builder serves them; MoE
feed-forward blocks plug in where :func:`_ffn` is. The plan runs one token per pass; the
place for a per-layer LoRA delta is after each projection in :func:`_project`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from doppler.errors import DopplerError
from doppler.format.config import ArchConfig
from doppler.gpu.budget import GpuBudget
from doppler.gpu.device import Gpu
from doppler.gpu.plan import Plan
from doppler.gpu.shaders import PipelineCache
from doppler.jsffi import JsProxy, js, js_object
from doppler.model import ops
from doppler.model.loader import LoadedModel
from doppler.model.rope import inv_freq
from doppler.model.weights import Weight

DENSE_ARCHS = ("llama", "qwen2", "gemma3")
RING = 64  # sampled-token ring slots; more than the passes ever in flight


class UnsupportedModel(DopplerError):
    code = "unsupported_architecture"


@dataclass
class Buffers:
    """Activations for one token (f32) and the per-step inputs the kernels read."""

    x: JsProxy
    xn: JsProxy
    q: JsProxy
    k: JsProxy
    v: JsProxy
    qn: JsProxy
    kn: JsProxy
    attn: JsProxy
    tmp: JsProxy
    tmp2: JsProxy
    gate: JsProxy
    up: JsProxy
    act: JsProxy
    logits: JsProxy
    logits_readback: JsProxy
    token: JsProxy
    ring: JsProxy
    positions: JsProxy
    kv: list[tuple[JsProxy, JsProxy]] = field(default_factory=list)
    inv_freq: dict[str, JsProxy] = field(default_factory=dict)


@dataclass
class DenseModel:
    """A model ready to run: ``forward`` embeds the id in ``buffers.token`` at the position in
    ``buffers.positions`` and leaves logits; ``sampler`` turns them into the next id on the
    GPU, which the next ``forward`` reads without a round trip through the CPU."""

    config: ArchConfig
    context_length: int
    gpu: Gpu
    budget: GpuBudget
    forward: Plan
    sampler: Plan
    buffers: Buffers
    weights: dict[str, Weight]
    _readbacks: list[JsProxy] = field(default_factory=list)

    async def logits(self, ids: list[int]) -> list[list[float]]:
        """Logits after each of ``ids`` (a fresh sequence from position 0)."""
        rows = []
        for position, token in enumerate(ids):
            encoder = self._pass(position, token)
            vocab_bytes = self.config.vocab_size * 4
            readback = self.buffers.logits_readback
            encoder.copyBufferToBuffer(self.buffers.logits, 0, readback, 0, vocab_bytes)
            self.gpu.device.queue.submit(js_object([encoder.finish()]))
            await readback.mapAsync(js.GPUMapMode.READ, 0, vocab_bytes)
            row = js.Float32Array.new(readback.getMappedRange(0, vocab_bytes)).to_py().tolist()
            readback.unmap()
            cap = self.config.final_softcap
            rows.append([cap * math.tanh(v / cap) for v in row] if cap else row)
        return rows

    async def generate(
        self, prompt: list[int], sampling: ops.Sampling, max_tokens: int
    ) -> AsyncIterator[int]:
        """Yield up to ``max_tokens`` sampled ids. Each pass is submitted before the previous
        token is read back, so the GPU never waits for Python; the consumer stops early by
        closing the iterator."""
        queue = self.gpu.device.queue
        for position, token in enumerate(prompt[:-1]):
            queue.submit(js_object([self._pass(position, token).finish()]))
        in_flight = [self._submit_sampled(len(prompt) - 1, prompt[-1], sampling, 0)]
        for step in range(max_tokens):
            if step + 1 < max_tokens:
                in_flight.append(self._submit_sampled(len(prompt) + step, None, sampling, step + 1))
            readback = in_flight.pop(0)
            await readback.mapAsync(js.GPUMapMode.READ, 0, 4)
            token = js.Uint32Array.new(readback.getMappedRange(0, 4))[0]
            readback.unmap()
            self._readbacks.append(readback)
            yield int(token)

    def _pass(self, position: int, token: int | None) -> JsProxy:
        """Write the pass's inputs and record the forward plan; ``None`` keeps the id the
        sampler left in ``buffers.token``."""
        queue = self.gpu.device.queue
        if token is not None:
            queue.writeBuffer(self.buffers.token, 0, _u32(token))
        queue.writeBuffer(self.buffers.positions, 0, _u32(position))
        encoder = self.gpu.device.createCommandEncoder()
        self.forward.encode(encoder, self.gpu.device)
        return encoder

    def _submit_sampled(
        self, position: int, token: int | None, sampling: ops.Sampling, step: int
    ) -> JsProxy:
        encoder = self._pass(position, token)
        self.sampler.encode(encoder, self.gpu.device, ops.StepState(sampling, step))
        readback = self._readbacks.pop() if self._readbacks else self._new_readback()
        slot = (step % RING) * 4
        encoder.copyBufferToBuffer(self.buffers.ring, slot, readback, 0, 4)
        self.gpu.device.queue.submit(js_object([encoder.finish()]))
        return readback

    def _new_readback(self) -> JsProxy:
        usage = js.GPUBufferUsage.MAP_READ | js.GPUBufferUsage.COPY_DST
        return self.budget.create_buffer(4, usage, "scratch", "token readback")


def _u32(value: int) -> JsProxy:
    return js.Uint32Array.new(js_object([value]))


async def build_model(
    loaded: LoadedModel,
    gpu: Gpu,
    budget: GpuBudget,
    pipelines: PipelineCache,
    context_length: int | None,
) -> DenseModel:
    cfg = loaded.manifest.config
    if cfg.arch not in DENSE_ARCHS or cfg.moe is not None or cfg.mla is not None:
        raise UnsupportedModel(
            f"architecture {cfg.arch!r} does not run yet (runs: {', '.join(DENSE_ARCHS)})"
        )
    ctx = int(context_length or min(cfg.max_position, 4096))
    if not 1 <= ctx <= cfg.max_position:
        raise DopplerError(
            f"contextLength {ctx} is outside 1..{cfg.max_position} for this model", "bad_request"
        )
    buffers = _allocate(cfg, ctx, budget)
    forward = Plan(f"{loaded.manifest.name} forward")
    _build(forward, cfg, loaded.weights, buffers, ctx)
    await forward.finish(pipelines, budget)
    sampler = Plan(f"{loaded.manifest.name} sampler")
    ops.sample(sampler, buffers.logits, buffers.token, buffers.ring, cfg.vocab_size, RING)
    await sampler.finish(pipelines, budget, ops.StepState(ops.Sampling()))
    return DenseModel(cfg, ctx, gpu, budget, forward, sampler, buffers, loaded.weights)


def _allocate(cfg: ArchConfig, ctx: int, budget: GpuBudget) -> Buffers:
    usage = js.GPUBufferUsage
    storage = usage.STORAGE | usage.COPY_DST | usage.COPY_SRC

    def f32(count: int, label: str, kind: str = "scratch") -> JsProxy:
        return budget.create_buffer(count * 4, storage, kind, label)

    h, d = cfg.hidden_size, cfg.head_dim
    q_size, kv_size = cfg.num_heads * d, cfg.num_kv_heads * d
    ff = cfg.intermediate_size
    buffers = Buffers(
        x=f32(h, "x"),
        xn=f32(h, "xn"),
        q=f32(q_size, "q"),
        k=f32(kv_size, "k"),
        v=f32(kv_size, "v"),
        qn=f32(q_size, "qn"),
        kn=f32(kv_size, "kn"),
        attn=f32(q_size, "attn"),
        tmp=f32(h, "tmp"),
        tmp2=f32(h, "tmp2"),
        gate=f32(ff, "gate"),
        up=f32(ff, "up"),
        act=f32(ff, "act"),
        logits=f32(cfg.vocab_size, "logits"),
        logits_readback=budget.create_buffer(
            cfg.vocab_size * 4, usage.MAP_READ | usage.COPY_DST, "scratch", "logits readback"
        ),
        token=f32(1, "token"),
        ring=f32(RING, "sampled tokens"),
        positions=f32(1, "positions"),
    )
    for layer in range(cfg.num_layers):
        buffers.kv.append(
            (
                f32(kv_size * ctx, f"k cache {layer}", "kv"),
                f32(kv_size * ctx, f"v cache {layer}", "kv"),
            )
        )
    for kind, theta, scaling in _rope_bases(cfg):
        values = inv_freq(cfg.rope.dim, theta, scaling)
        buffer = f32(len(values), f"inv_freq {kind}")
        budget.device.queue.writeBuffer(buffer, 0, js.Float32Array.new(js_object(values)))
        buffers.inv_freq[kind] = buffer
    return buffers


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


def _build(plan: Plan, cfg: ArchConfig, w: dict[str, Weight], b: Buffers, ctx: int) -> None:
    eps, offset = cfg.norm.eps, cfg.norm.weight_offset
    ops.embed(plan, w["embed.weight"], b.token, b.x, cfg.embedding_scale, 1)
    for layer in range(cfg.num_layers):
        p = f"layers.{layer}."
        ops.rmsnorm(plan, b.x, w[p + "attn_norm.weight"], b.xn, 1, eps, offset)
        _attention(plan, cfg, w, b, layer, ctx)
        _residual(plan, cfg, w, b, p + "post_attn_norm.weight")
        ops.rmsnorm(plan, b.x, w[p + "ffn_norm.weight"], b.xn, 1, eps, offset)
        _ffn(plan, cfg, w, b, p + "ffn.")
        _residual(plan, cfg, w, b, p + "post_ffn_norm.weight")
    ops.rmsnorm(plan, b.x, w["output_norm.weight"], b.xn, 1, eps, offset)
    head = w["embed.weight"] if cfg.tie_embeddings else w["lm_head.weight"]
    ops.matvec(plan, head, b.xn, b.logits, 1)


def _residual(plan: Plan, cfg: ArchConfig, w: dict[str, Weight], b: Buffers, norm: str) -> None:
    """x += block output (through the post-norm where the model has one, e.g. Gemma)."""
    h = cfg.hidden_size
    if cfg.norm.post_norms:
        ops.rmsnorm(plan, b.tmp, w[norm], b.tmp2, 1, cfg.norm.eps, cfg.norm.weight_offset)
        ops.add(plan, b.tmp2, b.x, h)
    else:
        ops.add(plan, b.tmp, b.x, h)


def _project(plan: Plan, w: dict[str, Weight], name: str, x: JsProxy, y: JsProxy) -> None:
    ops.matvec(plan, w[name + ".weight"], x, y, 1)
    bias = w.get(name + ".bias")
    if bias is not None:
        ops.add(plan, bias.parts[0].buffer, y, bias.row_len)


def _attention(
    plan: Plan, cfg: ArchConfig, w: dict[str, Weight], b: Buffers, layer: int, ctx: int
) -> None:
    p = f"layers.{layer}.attn."
    d = cfg.head_dim
    _project(plan, w, p + "q", b.xn, b.q)
    _project(plan, w, p + "k", b.xn, b.k)
    _project(plan, w, p + "v", b.xn, b.v)
    q, k = b.q, b.k
    if cfg.qk_norm == "head":
        eps, offset = cfg.norm.eps, cfg.norm.weight_offset
        ops.rmsnorm(plan, b.q, w[p + "q_norm.weight"], b.qn, cfg.num_heads, eps, offset)
        ops.rmsnorm(plan, b.k, w[p + "k_norm.weight"], b.kn, cfg.num_kv_heads, eps, offset)
        q, k = b.qn, b.kn
    sliding = cfg.layer_types[layer] == "sliding"
    freqs = b.inv_freq["sliding" if sliding else "full"]
    rope_shape = (1, cfg.num_heads, cfg.num_kv_heads, d, cfg.rope.dim)
    ops.rope(plan, b.positions, freqs, q, k, rope_shape, cfg.rope.style == "interleaved")
    shape = ops.AttentionShape(
        n_tokens=1,
        n_heads=cfg.num_heads,
        n_kv_heads=cfg.num_kv_heads,
        head_dim=d,
        max_ctx=ctx,
        window=cfg.sliding_window if sliding and cfg.sliding_window else 0,
        scale=cfg.attn_scale,
        softcap=cfg.attn_softcap or 0.0,
    )
    ops.kv_write(plan, k, b.v, b.positions, b.kv[layer], shape)
    ops.attention(plan, q, b.kv[layer], b.positions, b.attn, shape)
    _project(plan, w, p + "o", b.attn, b.tmp)


def _ffn(plan: Plan, cfg: ArchConfig, w: dict[str, Weight], b: Buffers, p: str) -> None:
    ops.matvec(plan, w[p + "gate.weight"], b.xn, b.gate, 1)
    ops.matvec(plan, w[p + "up.weight"], b.xn, b.up, 1)
    ops.gated(plan, b.gate, b.up, b.act, cfg.intermediate_size, cfg.activation)
    ops.matvec(plan, w[p + "down.weight"], b.act, b.tmp, 1)
