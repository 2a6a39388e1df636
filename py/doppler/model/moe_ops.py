"""Dispatches of the Mixture-of-Experts kernels (``shaders/router.wgsl``, ``shaders/moe.wgsl``).

Like :mod:`doppler.model.ops`, each function mirrors its shader's ``struct Params``. The
experts' weights live in slots of one bound buffer (an *arena*) and each layer's offset
table maps expert id -> slot, so these dispatches never change when the pager moves experts.
"""

from __future__ import annotations

from dataclasses import dataclass

from doppler.format.config import Moe
from doppler.gpu.plan import Binding, Plan
from doppler.gpu.shaders import PipelineKey
from doppler.jsffi import JsProxy
from doppler.model.ops import ACTIVATIONS, ceil_div, grid, layout_flag, layout_words, pack

WG = 64
ROWS_PER_WG = 8  # rows per workgroup of the expert kernels (WG / 8 lanes share a row)
SCORINGS = {"softmax": 0, "sigmoid": 1}


@dataclass(frozen=True)
class Projection:
    """One projection of every expert of a layer: its layout, shape and word offset in a slot."""

    layout: str
    rows: int
    cols: int
    word: int


@dataclass(frozen=True)
class ExpertGeometry:
    """Where an expert's projections sit inside its slot (the same for every expert)."""

    gate: Projection
    up: Projection
    down: Projection
    slot_bytes: int


@dataclass(frozen=True)
class Routing:
    """The pass's routing buffers: ids and weights [n_tokens, top_k] written by ``topk``."""

    ids: JsProxy
    weights: JsProxy


@dataclass(frozen=True)
class Grouping:
    """Prefill scratch: the pairs sorted by expert (``groups``) and per-pair down outputs."""

    groups: JsProxy  # u32 [n_experts + 1 + n_tokens * top_k]
    per_pair: JsProxy  # f32 [n_tokens * top_k, hidden]


def topk(plan: Plan, moe: Moe, logits: JsProxy, bias: JsProxy, out: Routing, n: int) -> None:
    """Each token's top-k experts and mixing weights from its router logits."""
    gx, gy = grid(n)
    plan.add(
        PipelineKey("router", entry="topk", constants=_max_experts(moe.num_experts)),
        [Binding(0, logits), Binding(1, bias), Binding(2, out.ids), Binding(3, out.weights)],
        pack(
            "IIIIIIIIfIII",
            n,
            moe.num_experts,
            moe.top_k,
            gx,
            SCORINGS[moe.scoring],
            int(moe.renormalize),
            moe.n_group,
            moe.topk_group,
            moe.routed_scaling_factor,
            0,
            0,
            0,
        ),
        (gx, gy),
    )


def _max_experts(count: int) -> tuple[tuple[str, float], ...]:
    """router.wgsl sizes its workgroup arrays for 256 experts unless told more."""
    return (("MAX_EXPERTS", count),) if count > 256 else ()


def _expert_params(
    proj: Projection, n: int, top_k: int, gx: int, up_word: int, act: int, accumulate: int
) -> bytes:
    row_words, plane1, plane2 = layout_words(proj.layout, proj.cols)
    return pack(
        "IIIIIIIIIIII",
        n,
        top_k,
        proj.rows,
        proj.cols,
        gx,
        row_words,
        plane1,
        plane2,
        proj.word,
        up_word,
        act,
        accumulate,
    )


def gate_up(
    plan: Plan,
    geometry: ExpertGeometry,
    arena: JsProxy,
    table: JsProxy,
    routing: Routing,
    x: JsProxy,
    h: JsProxy,
    n: int,
    top_k: int,
    activation: str,
) -> None:
    """h[t, j] = act(W_gate x[t]) * (W_up x[t]) for each token's j-th chosen expert."""
    gate = geometry.gate
    gx, gy = grid(ceil_div(gate.rows, ROWS_PER_WG) * n * top_k)
    plan.add(
        PipelineKey(
            "moe",
            entry="gate_up",
            flags=frozenset({layout_flag(gate.layout)}),
            constants=(("ROWS_PER_WG", ROWS_PER_WG),),
        ),
        [
            Binding(0, arena),
            Binding(1, table),
            Binding(2, routing.ids),
            Binding(4, x),
            Binding(5, h),
        ],
        _expert_params(gate, n, top_k, gx, geometry.up.word, ACTIVATIONS[activation], 0),
        (gx, gy),
        params_binding=6,
    )


def down(
    plan: Plan,
    geometry: ExpertGeometry,
    arena: JsProxy,
    table: JsProxy,
    routing: Routing,
    h: JsProxy,
    y: JsProxy,
    n: int,
    top_k: int,
    accumulate: bool,
) -> None:
    """y[t] (+)= sum_j weight[t, j] * W_down h[t, j]."""
    proj = geometry.down
    gx, gy = grid(ceil_div(proj.rows, ROWS_PER_WG) * n)
    plan.add(
        PipelineKey(
            "moe",
            entry="down",
            flags=frozenset({layout_flag(proj.layout)}),
            constants=(("ROWS_PER_WG", ROWS_PER_WG),),
        ),
        [
            Binding(0, arena),
            Binding(1, table),
            Binding(2, routing.ids),
            Binding(3, routing.weights),
            Binding(4, h),
            Binding(5, y),
        ],
        _expert_params(proj, n, top_k, gx, 0, 0, int(accumulate)),
        (gx, gy),
        params_binding=6,
    )


def shared_gate(
    plan: Plan, gate_logits: JsProxy, src: JsProxy, dst: JsProxy, n: int, rows: int
) -> None:
    """dst += sigmoid(gate_logit[t]) * src[t] (Qwen2-MoE's gated shared expert)."""
    gx, gy = grid(ceil_div(n * rows, WG))
    plan.add(
        # moe.wgsl includes the dequantizer, which needs some layout to compile
        PipelineKey("moe", entry="shared_gate", flags=frozenset({layout_flag("f32")})),
        [Binding(3, gate_logits), Binding(4, src), Binding(5, dst)],
        pack("IIIIIIIIIIII", n, 0, rows, 0, gx, 0, 0, 0, 0, 0, 0, 0),
        (gx, gy),
        params_binding=6,
    )


def _key(entry: str, layout: str) -> PipelineKey:
    return PipelineKey(
        "moe",
        entry=entry,
        flags=frozenset({layout_flag(layout)}),
        constants=(("ROWS_PER_WG", ROWS_PER_WG),),
    )


def grouped_ffn(
    plan: Plan,
    geometry: ExpertGeometry,
    arena: JsProxy,
    table: JsProxy,
    routing: Routing,
    grouping: Grouping,
    x: JsProxy,
    h: JsProxy,
    y: JsProxy,
    shape: tuple[int, int, int],
    activation: str,
) -> None:
    """The expert FFN of a prefill chunk with each expert's rows decoded once for all of its
    tokens: sort the pairs by expert, gate/up and down per expert, then mix into ``y``.
    ``shape`` = (n_tokens, top_k, n_experts)."""
    n, top_k, n_experts = shape
    pairs = Binding(7, grouping.groups)
    plan.add(
        PipelineKey("moe", entry="group", flags=frozenset({layout_flag("f32")})),
        [Binding(2, routing.ids), pairs],
        pack("IIIIIIIIIIII", n, top_k, n_experts, 0, 1, 0, 0, 0, 0, 0, 0, 0),
        (1,),
        params_binding=6,
    )
    gate, down = geometry.gate, geometry.down
    gx, gy = grid(ceil_div(gate.rows, ROWS_PER_WG) * n_experts)
    plan.add(
        _key("gate_up_grouped", gate.layout),
        [Binding(0, arena), Binding(1, table), Binding(4, x), Binding(5, h), pairs],
        _expert_params(gate, n, top_k, gx, geometry.up.word, ACTIVATIONS[activation], 0),
        (gx, gy),
        params_binding=6,
    )
    gx, gy = grid(ceil_div(down.rows, ROWS_PER_WG) * n_experts)
    plan.add(
        _key("down_grouped", down.layout),
        [Binding(0, arena), Binding(1, table), Binding(4, h), Binding(5, grouping.per_pair), pairs],
        _expert_params(down, n, top_k, gx, 0, 0, 0),
        (gx, gy),
        params_binding=6,
    )
    gx, gy = grid(ceil_div(n * down.rows, WG))
    plan.add(
        PipelineKey("moe", entry="combine", flags=frozenset({layout_flag("f32")})),
        [Binding(3, routing.weights), Binding(4, grouping.per_pair), Binding(5, y)],
        pack("IIIIIIIIIIII", n, top_k, down.rows, 0, gx, 0, 0, 0, 0, 0, 0, 0),
        (gx, gy),
        params_binding=6,
    )
