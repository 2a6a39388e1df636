"""The feed-forward block of an MoE layer: router, top-k, routed experts, shared expert.

Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE differ here only in what the config says (scoring,
renormalisation, a shared expert and its sigmoid gate), so one builder serves them. The
output lands in ``a.tmp`` like the dense ``_ffn``'s. When the experts are paged, the plan is
*marked* right after the router's top-k: the model runs the plan up to the mark, reads the
chosen ids back, lets the pager make them resident, then runs on.
"""

from __future__ import annotations

from dataclasses import dataclass

from doppler.format.config import ArchConfig
from doppler.gpu.budget import GpuBudget
from doppler.gpu.plan import Plan
from doppler.jsffi import JsProxy, js
from doppler.model import moe_ops, ops
from doppler.model.weights import Weight
from doppler.moe.pager import ExpertPager


@dataclass
class MoeScratch:
    """f32/u32 scratch of one pass's MoE blocks (shared by every MoE layer of the pass)."""

    router_logits: JsProxy
    routing: moe_ops.Routing
    ids_readback: JsProxy  # the routing ids, mapped by the CPU when experts are paged
    h: JsProxy  # [n, top_k, expert ff]
    grouping: moe_ops.Grouping | None  # prefill passes: the chunk's pairs grouped by expert
    no_bias: JsProxy  # bound where a router has no selection bias
    shared_gate: JsProxy | None  # [n, shared ff] x3 and the gate logit, when shared experts
    shared_up: JsProxy | None
    shared_act: JsProxy | None
    shared_out: JsProxy | None
    gate_logit: JsProxy | None


def allocate_scratch(cfg: ArchConfig, n: int, budget: GpuBudget) -> MoeScratch | None:
    moe = cfg.moe
    if moe is None:
        return None
    usage = js.GPUBufferUsage
    flags = usage.STORAGE | usage.COPY_DST | usage.COPY_SRC

    def buf(count: int, label: str) -> JsProxy:
        return budget.create_buffer(count * 4, flags, "scratch", f"{label} x{n}")

    shared = moe.num_shared_experts * moe.shared_intermediate_size
    return MoeScratch(
        router_logits=buf(n * moe.num_experts, "router logits"),
        routing=moe_ops.Routing(
            buf(n * moe.top_k, "expert ids"), buf(n * moe.top_k, "expert weights")
        ),
        ids_readback=budget.create_buffer(
            n * moe.top_k * 4,
            usage.MAP_READ | usage.COPY_DST,
            "scratch",
            f"expert ids readback x{n}",
        ),
        h=buf(n * moe.top_k * moe.expert_intermediate_size, "expert hidden"),
        grouping=moe_ops.Grouping(
            buf(moe.num_experts + 1 + n * moe.top_k, "pairs by expert"),
            buf(n * moe.top_k * cfg.hidden_size, "per-pair expert output"),
        )
        if n > 1
        else None,
        no_bias=buf(moe.num_experts, "zero router bias"),
        shared_gate=buf(n * shared, "shared gate") if shared else None,
        shared_up=buf(n * shared, "shared up") if shared else None,
        shared_act=buf(n * shared, "shared act") if shared else None,
        shared_out=buf(n * cfg.hidden_size, "shared out") if shared else None,
        gate_logit=buf(n, "shared gate logit") if moe.shared_expert_gate else None,
    )


def moe_ffn(
    plan: Plan,
    cfg: ArchConfig,
    w: dict[str, Weight],
    xn: JsProxy,
    out: JsProxy,
    n: int,
    layer: int,
    s: MoeScratch,
    pager: ExpertPager,
) -> None:
    """out = sum over the chosen experts of weight * expert(xn) (+ the shared expert)."""
    moe = cfg.moe
    assert moe is not None
    p = f"layers.{layer}."
    ops.matvec(plan, w[p + "router.weight"], xn, s.router_logits, n)
    bias = w.get(p + "router.score_bias")
    bias_buffer = bias.parts[0].buffer if bias is not None else s.no_bias
    moe_ops.topk(plan, moe, s.router_logits, bias_buffer, s.routing, n)
    if not pager.resident:
        plan.mark(layer)
    geometry, arena, table = pager.catalog.geometry, pager.arena(layer), pager.tables[layer]
    if s.grouping is not None:
        shape = (n, moe.top_k, moe.num_experts)
        moe_ops.grouped_ffn(
            plan, geometry, arena, table, s.routing, s.grouping, xn, s.h, out, shape, cfg.activation
        )
    else:
        moe_ops.gate_up(
            plan, geometry, arena, table, s.routing, xn, s.h, n, moe.top_k, cfg.activation
        )
        moe_ops.down(plan, geometry, arena, table, s.routing, s.h, out, n, moe.top_k, False)
    if moe.num_shared_experts:
        _shared_expert(plan, cfg, w, xn, out, n, p + "shared.", s)


def _shared_expert(
    plan: Plan,
    cfg: ArchConfig,
    w: dict[str, Weight],
    xn: JsProxy,
    out: JsProxy,
    n: int,
    p: str,
    s: MoeScratch,
) -> None:
    """out += shared FFN(xn), scaled by sigmoid(gate . xn) where the model has that gate."""
    assert s.shared_gate and s.shared_up and s.shared_act and s.shared_out
    ops.matvec(plan, w[p + "ffn.gate.weight"], xn, s.shared_gate, n)
    ops.matvec(plan, w[p + "ffn.up.weight"], xn, s.shared_up, n)
    rows = w[p + "ffn.gate.weight"].rows
    ops.gated(plan, s.shared_gate, s.shared_up, s.shared_act, n * rows, cfg.activation)
    ops.matvec(plan, w[p + "ffn.down.weight"], s.shared_act, s.shared_out, n)
    if s.gate_logit is not None:
        ops.matvec(plan, w[p + "gate.weight"], xn, s.gate_logit, n)
        moe_ops.shared_gate(plan, s.gate_logit, s.shared_out, out, n, cfg.hidden_size)
    else:
        ops.add(plan, s.shared_out, out, n * cfg.hidden_size)
