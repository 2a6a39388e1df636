"""Expert FFNs on the GPU (shaders/moe.wgsl) against float64 numpy over the same dequantized
weights, and against transformers' own expert modules.

Experts live in "banks": one buffer holding every expert's slot at a word offset from a
table indexed by expert id, slots shuffled and separated by garbage, as the expert pager will
lay them out. Tolerances are propagated float32 rounding bounds (as in test_matvec_quant) and
planted bugs must break them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from transformers import MixtralConfig, Qwen3MoeConfig
from transformers.models.mixtral.modeling_mixtral import MixtralExperts
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeExperts

from doppler.convert.pack import dequantize, pack_float
from gpu.packing import flag, random_packed, words
from harness.kernels import Buffer, params, read, shader_source, write

pytestmark = pytest.mark.browser

RNG = np.random.default_rng(31)
SILU, GELU_TANH = 0, 1
PARAMS = "I" * 12  # n_tokens, top_k, rows, cols, grid_x, row_words, plane1, plane2,
# proj_word, up_word, act, accumulate
LEAD_WORDS = 3  # garbage before the first slot: offsets are not multiples of the slot size


@dataclass
class Experts:
    """Packed expert weights (uint8 per expert and projection) and their float64 values."""

    hidden: int
    ff: int
    gate_up_layout: str
    down_layout: str
    packed: dict[str, list[np.ndarray]]
    values: dict[str, np.ndarray]  # name: (n_experts, rows, cols)

    @property
    def n_experts(self) -> int:
        return len(self.packed["down"])

    def words(self, proj: str) -> tuple[int, int, int]:
        if proj == "down":
            return words(self.down_layout, self.ff)
        return words(self.gate_up_layout, self.hidden)


def random_experts(n_experts, hidden, ff, gate_up_layout, down_layout=None) -> Experts:
    down_layout = down_layout or gate_up_layout
    shapes = {"gate": (ff, hidden), "up": (ff, hidden), "down": (hidden, ff)}
    packed: dict[str, list[np.ndarray]] = {name: [] for name in shapes}
    for name, shape in shapes.items():
        layout = down_layout if name == "down" else gate_up_layout
        packed[name] = [random_packed(RNG, layout, shape) for _ in range(n_experts)]
    return experts_from(packed, hidden, ff, gate_up_layout, down_layout)


def experts_from(packed, hidden, ff, gate_up_layout, down_layout) -> Experts:
    values = {}
    for name, tensors in packed.items():
        layout, shape = (
            (down_layout, (hidden, ff)) if name == "down" else (gate_up_layout, (ff, hidden))
        )
        values[name] = np.stack([dequantize(layout, t, shape) for t in tensors]).astype(np.float64)
    return Experts(hidden, ff, gate_up_layout, down_layout, packed, values)


@dataclass
class Bank:
    """One weight buffer of expert slots and the table locating each expert's slot."""

    buffer: np.ndarray  # uint8
    table: np.ndarray  # u32 word offset of each expert's slot, indexed by expert id
    proj_word: dict[str, int]  # word offset of each projection inside a slot


def bank(experts, projs, slot_of=None, spare=1) -> Bank:
    """A bank of ``projs`` (consecutive in each slot) with expert e in slot slot_of[e]; unused
    slots and the lead hold random bytes."""
    slot_of = RNG.permutation(experts.n_experts + spare) if slot_of is None else slot_of
    sizes = [experts.packed[p][0].size for p in projs]
    slot_bytes = sum(sizes)
    buffer = RNG.integers(0, 256, 4 * LEAD_WORDS + slot_bytes * (max(slot_of) + 1), np.uint8)
    for e in range(experts.n_experts):
        start = 4 * LEAD_WORDS + slot_of[e] * slot_bytes
        buffer[start : start + slot_bytes] = np.concatenate([experts.packed[p][e] for p in projs])
    table = (LEAD_WORDS + np.asarray(slot_of[: experts.n_experts]) * (slot_bytes // 4)).astype(
        np.uint32
    )
    proj_word = dict(zip(projs, np.cumsum([0, *sizes[:-1]]) // 4, strict=True))
    return Bank(buffer, table, {p: int(w) for p, w in proj_word.items()})


def grid(groups: int, grid_x: int | None) -> tuple[int, int]:
    grid_x = grid_x or min(groups, 65535)
    return grid_x, -(-groups // grid_x)


def run_gate_up(
    kernels, experts, gate_up, ids, x, *, act=SILU, wg=64, rows_per_wg=8, grid_x=None, source=None
):
    """h (n_tokens, top_k, ff) for the experts of ``gate_up`` (a Bank of gate and up)."""
    n_tokens, top_k = ids.shape
    row_words, plane1, plane2 = experts.words("gate")
    groups = -(-experts.ff // rows_per_wg) * n_tokens * top_k
    gx, gy = grid(groups, grid_x)
    values = (n_tokens, top_k, experts.ff, experts.hidden, gx, row_words, plane1, plane2)
    (h,) = kernels.run(
        "moe",
        [
            read(0, gate_up.buffer),
            read(1, gate_up.table),
            read(2, ids.astype(np.uint32)),
            read(4, x.astype(np.float32)),
            write(5, n_tokens * top_k * experts.ff),
            params(6, PARAMS, *values, gate_up.proj_word["gate"], gate_up.proj_word["up"], act, 0),
        ],
        (gx, gy),
        entry="gate_up",
        flags=(flag(experts.gate_up_layout),),
        constants={"WG": wg, "ROWS_PER_WG": rows_per_wg},
        source=source,
    )
    return h.reshape(n_tokens, top_k, experts.ff)


def run_down(
    kernels,
    experts,
    down,
    ids,
    route_weights,
    h,
    *,
    y0=None,
    wg=64,
    rows_per_wg=8,
    grid_x=None,
    source=None,
):
    """y (n_tokens, hidden); added to y0 when given (accumulate = 1), else overwritten."""
    n_tokens, top_k = ids.shape
    row_words, plane1, plane2 = experts.words("down")
    groups = -(-experts.hidden // rows_per_wg) * n_tokens
    gx, gy = grid(groups, grid_x)
    values = (n_tokens, top_k, experts.hidden, experts.ff, gx, row_words, plane1, plane2)
    size = n_tokens * experts.hidden
    y = write(5, size) if y0 is None else Buffer(5, "write", array=y0.astype(np.float32))
    (out,) = kernels.run(
        "moe",
        [
            read(0, down.buffer),
            read(1, down.table),
            read(2, ids.astype(np.uint32)),
            read(3, route_weights.astype(np.float32)),
            read(4, h.astype(np.float32)),
            y,
            params(6, PARAMS, *values, down.proj_word["down"], 0, 0, int(y0 is not None)),
        ],
        (gx, gy),
        entry="down",
        flags=(flag(experts.down_layout),),
        constants={"WG": wg, "ROWS_PER_WG": rows_per_wg},
        source=source,
    )
    return out.reshape(n_tokens, experts.hidden)


# ---- float64 references and their float32 error bounds -------------------------------------

EPS = 1e-5  # per-dot relative bound, as in test_matvec_quant


def act_ref(g, act):
    if act == SILU:
        return 0.5 * g * (1 + np.tanh(g / 2))  # g * sigmoid(g), without exp overflow
    return 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g**3)))


def gate_up_ref(experts, ids, x, act):
    """(h, bound): h[t, j] in float64, and a bound on the kernel's float32 error."""
    x64 = np.abs(x.astype(np.float64))
    gate = np.einsum("tjrc,tc->tjr", experts.values["gate"][ids], x.astype(np.float64))
    up = np.einsum("tjrc,tc->tjr", experts.values["up"][ids], x.astype(np.float64))
    gate_err = EPS * np.einsum("tjrc,tc->tjr", np.abs(experts.values["gate"][ids]), x64)
    up_err = EPS * np.einsum("tjrc,tc->tjr", np.abs(experts.values["up"][ids]), x64)
    a = act_ref(gate, act)
    # |act'| <= 1.13 for SiLU and GELU-tanh; 1e-6 covers the GPU's exp/tanh.
    bound = 1.2 * gate_err * np.abs(up) + np.abs(a) * up_err + 1e-6 * np.abs(a * up)
    return a * up, bound + 1e-30


def down_ref(experts, ids, route_weights, h, h_bound=None, y0=None):
    """(y, bound) for down over h (a float64 array with its own error bound h_bound)."""
    down = experts.values["down"][ids]
    w = route_weights.astype(np.float64)
    y = np.einsum("tj,tjrc,tjc->tr", w, down, h)
    y0 = np.zeros_like(y) if y0 is None else y0.astype(np.float64)
    bound = EPS * np.einsum("tj,tjrc,tjc->tr", np.abs(w), np.abs(down), np.abs(h))
    if h_bound is not None:
        bound += np.einsum("tj,tjrc,tjc->tr", np.abs(w), np.abs(down), h_bound)
    return y0 + y, bound + 1e-6 * np.abs(y0 + y) + 1e-30


def check(got, want_and_bound):
    want, bound = want_and_bound
    err = np.abs(got - want)
    assert (err <= bound).all(), f"max error/bound {np.nanmax(err / bound):.3g}"


def routing(n_tokens, top_k, n_experts):
    ids = np.stack([RNG.choice(n_experts, top_k, replace=False) for _ in range(n_tokens)])
    return ids, RNG.uniform(0.05, 1.0, (n_tokens, top_k))


def ffn(kernels, experts, ids, route_weights, x, *, act=SILU, y0=None, one_slot=False, **kw):
    """The two kernels chained as the model runs them; checked stage by stage. Returns y."""
    if one_slot:
        gate_up = down = bank(experts, ("gate", "up", "down"))
    else:
        gate_up, down = bank(experts, ("gate", "up")), bank(experts, ("down",))
    h = run_gate_up(kernels, experts, gate_up, ids, x, act=act, **kw)
    h_want, h_bound = gate_up_ref(experts, ids, x, act)
    check(h, (h_want, h_bound))
    y = run_down(kernels, experts, down, ids, route_weights, h, y0=y0, **kw)
    check(y, down_ref(experts, ids, route_weights, h.astype(np.float64), y0=y0))
    check(y, down_ref(experts, ids, route_weights, h_want, h_bound, y0))
    return y


# ---- tests ---------------------------------------------------------------------------------

LAYOUT_CASES = {  # name: (gate/up layout, down layout, n_experts, hidden, ff, n_tokens, top_k)
    "f32": ("f32", "f32", 5, 13, 37, 3, 2),
    "f16": ("f16", "f16", 6, 70, 21, 2, 3),
    "bf16": ("bf16", "bf16", 3, 9, 17, 2, 2),
    "q8_0": ("q8_0", "q8_0", 4, 96, 64, 2, 2),
    "q4_0": ("q4_0", "q4_0", 5, 64, 96, 3, 2),
    "q4_1": ("q4_1", "q4_1", 3, 32, 64, 1, 2),
    "q5_0": ("q5_0", "q5_0", 3, 64, 32, 1, 2),
    "q5_1": ("q5_1", "q5_1", 3, 32, 32, 2, 1),
    "q4_k": ("q4_k", "q4_k", 4, 256, 256, 2, 2),
    "q5_k": ("q5_k", "q5_k", 3, 256, 256, 1, 2),
    "q6_k": ("q6_k", "q6_k", 3, 256, 256, 1, 2),
    "q4_k gate/up, q6_k down": ("q4_k", "q6_k", 4, 256, 256, 2, 2),
    "q8_0 gate/up, f16 down": ("q8_0", "f16", 4, 32, 45, 2, 3),
}


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_moe_ffn_matches_numpy(kernels, case):
    gate_up_layout, down_layout, n_experts, hidden, ff, n_tokens, top_k = LAYOUT_CASES[case]
    experts = random_experts(n_experts, hidden, ff, gate_up_layout, down_layout)
    ids, route_weights = routing(n_tokens, top_k, n_experts)
    x = RNG.standard_normal((n_tokens, hidden)).astype(np.float32)
    ffn(kernels, experts, ids, route_weights, x)


@pytest.mark.parametrize(
    ("layout", "wg", "rows_per_wg", "grid_x"),
    [("f16", 64, 1, None), ("q4_0", 32, 4, 5), ("f32", 128, 64, None), ("q8_0", 64, 16, 3)],
)
def test_workgroup_shapes_and_narrow_grids(kernels, layout, wg, rows_per_wg, grid_x):
    hidden, ff = (70, 37) if layout in ("f16", "f32") else (64, 96)
    experts = random_experts(6, hidden, ff, layout)
    ids, route_weights = routing(3, 3, 6)
    x = RNG.standard_normal((3, hidden)).astype(np.float32)
    shape = {"wg": wg, "rows_per_wg": rows_per_wg, "grid_x": grid_x}
    ffn(kernels, experts, ids, route_weights, x, **shape)


def test_gelu_accumulate_and_one_slot_for_all_three(kernels):
    """GELU-tanh; y accumulated onto a residual; gate, up and down of an expert in one slot
    with one table for both entries."""
    experts = random_experts(5, 64, 32, "q8_0", "q4_0")
    ids, route_weights = routing(4, 2, 5)
    x = RNG.standard_normal((4, 64)).astype(np.float32)
    y0 = RNG.standard_normal((4, 64)).astype(np.float32) * 100
    ffn(kernels, experts, ids, route_weights, x, act=GELU_TANH, y0=y0, one_slot=True)


def test_same_expert_for_every_token_and_top_1(kernels):
    experts = random_experts(3, 40, 24, "f16")
    ids, route_weights = np.full((5, 1), 2), RNG.uniform(0.1, 1, (5, 1))
    ffn(kernels, experts, ids, route_weights, RNG.standard_normal((5, 40)).astype(np.float32))


def test_expert_offset_table_is_honoured(kernels):
    """Moving experts between slots (buffer and table together) changes nothing; changing
    only the table runs the expert whose weights now sit there."""
    experts = random_experts(5, 32, 64, "q4_0")
    ids, route_weights = routing(3, 2, 5)
    x = RNG.standard_normal((3, 32)).astype(np.float32)

    def both(slots):
        gate_up, down = bank(experts, ("gate", "up"), slots), bank(experts, ("down",), slots)
        h = run_gate_up(kernels, experts, gate_up, ids, x)
        return h, run_down(kernels, experts, down, ids, route_weights, h), gate_up, down

    h1, y1, _, _ = both(np.array([0, 1, 2, 3, 4, 5]))
    h2, y2, gate_up, down = both(np.array([5, 3, 0, 4, 1, 2]))
    np.testing.assert_array_equal(h1, h2)
    np.testing.assert_array_equal(y1, y2)
    # Point ids[0, 0]'s entry at the slot of another expert (its weights there are genuine).
    chosen, other = ids[0, 0], next(e for e in range(5) if e not in ids[0])
    gate_up.table[chosen], down.table[chosen] = gate_up.table[other], down.table[other]
    h3 = run_gate_up(kernels, experts, gate_up, ids, x)
    y3 = run_down(kernels, experts, down, ids, route_weights, h3)
    remapped = np.where(ids == chosen, other, ids)
    assert not np.array_equal(h3, h1)
    check(h3, gate_up_ref(experts, remapped, x, SILU))
    check(y3, down_ref(experts, remapped, route_weights, h3.astype(np.float64)))


EXPERT_MODULES = {
    "mixtral": lambda: MixtralExperts(
        MixtralConfig(hidden_size=40, intermediate_size=23, num_local_experts=6)
    ),
    "qwen3_moe": lambda: Qwen3MoeExperts(
        Qwen3MoeConfig(hidden_size=40, moe_intermediate_size=23, num_experts=6)
    ),
}


@pytest.mark.parametrize("arch", sorted(EXPERT_MODULES))
def test_moe_ffn_matches_transformers_experts(kernels, arch):
    """Float32 experts from transformers (fused gate_up_proj, gate rows first) in one slot
    each; the module's own forward on the same routing is the reference."""
    torch.manual_seed(7)
    module = EXPERT_MODULES[arch]()
    with torch.no_grad():
        module.gate_up_proj.normal_(0.0, 0.2)
        module.down_proj.normal_(0.0, 0.2)
    gate_up_proj, down_proj = (
        module.gate_up_proj.detach().numpy(),
        module.down_proj.detach().numpy(),
    )
    ff, hidden = down_proj.shape[2], down_proj.shape[1]
    packed = {
        "gate": [pack_float(w[:ff], "f32")[1] for w in gate_up_proj],
        "up": [pack_float(w[ff:], "f32")[1] for w in gate_up_proj],
        "down": [pack_float(w, "f32")[1] for w in down_proj],
    }
    experts = experts_from(packed, hidden, ff, "f32", "f32")
    ids, route_weights = routing(4, 2, 6)
    x = RNG.standard_normal((4, hidden)).astype(np.float32)
    y = ffn(kernels, experts, ids, route_weights, x)
    with torch.no_grad():
        want = module(
            torch.tensor(x), torch.tensor(ids), torch.tensor(route_weights.astype(np.float32))
        )
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-4, atol=1e-5)


PLANTED_BUGS = {  # name: (good, bad, layouts, act)
    "gate reads the up rows": (
        "slot + params.proj_word + r * params.row_words",
        "slot + params.up_word + r * params.row_words",
        ("q4_k", "q4_k"),
        SILU,
    ),
    "expert offset off by one word": (
        "let slot = expert_offset_words[expert_ids[pair]];",
        "let slot = expert_offset_words[expert_ids[pair]] + 1u;",
        ("f32", "f32"),
        SILU,
    ),
    "down table indexed by choice, not expert id": (
        "expert_offset_words[expert_ids[pair]] + params.proj_word",
        "expert_offset_words[expert_ids[pair] * 0u + j] + params.proj_word",
        ("q8_0", "q8_0"),
        SILU,
    ),
    "activation flag ignored": (
        "params.act == ACT_GELU_TANH",
        "false",
        ("f16", "f16"),
        GELU_TANH,
    ),
    "route weight ignored": (
        "expert_weights[pair] * lane_dot",
        "(expert_weights[pair] * 0.0 + 1.0) * lane_dot",
        ("q4_0", "q4_0"),
        SILU,
    ),
    "only the first choice": ("j < params.top_k", "j < 1u", ("q4_0", "q6_k"), SILU),
    "token stride in x": (
        "(pair / params.top_k) * params.cols",
        "pair * params.cols",
        ("f16", "f16"),
        SILU,
    ),
    "down reads h of the token, not the pair": (
        "lane_dot(row_word, pair * params.cols",
        "lane_dot(row_word, t * params.cols",
        ("f32", "f32"),
        SILU,
    ),
    "row tail dropped": (
        "min(CHUNK, params.cols - k0)",
        "min(CHUNK - 1u, params.cols - k0)",
        ("f16", "f16"),
        SILU,
    ),
    "accumulate ignored": (
        "params.accumulate == 1u",
        "false",
        ("q8_0", "q8_0"),
        SILU,
    ),
}


@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_bugs_fail_the_comparison(kernels, bug):
    good, bad, (gate_up_layout, down_layout), act = PLANTED_BUGS[bug]
    source = shader_source("moe.wgsl")
    assert good in source, "the planted bug no longer applies: update the control"
    kquant = "k" in gate_up_layout + down_layout
    hidden, ff = (256, 256) if kquant else (32, 64) if "q" in gate_up_layout else (21, 37)
    experts = random_experts(5, hidden, ff, gate_up_layout, down_layout)
    ids, route_weights = routing(3, 2, 5)
    x = RNG.standard_normal((3, hidden)).astype(np.float32)
    y0 = RNG.standard_normal((3, hidden)).astype(np.float32)
    with pytest.raises(AssertionError):
        ffn(
            kernels,
            experts,
            ids,
            route_weights,
            x,
            act=act,
            y0=y0,
            source=source.replace(good, bad),
        )


# ---- prefill grouped by expert -------------------------------------------------------------


def run_grouped(
    kernels, experts, gate_up, down, ids, route_weights, x, *, act=SILU, y0=None, source=None
):
    """(groups, h, y) from group -> gate_up_grouped -> down_grouped -> combine."""
    n_tokens, top_k = ids.shape
    n_experts, pairs = experts.n_experts, ids.size
    common = {"source": source, "constants": {"WG": 64, "ROWS_PER_WG": 8}}
    (groups,) = kernels.run(
        "moe",
        [
            read(2, ids.astype(np.uint32)),
            write(7, n_experts + 1 + pairs, np.uint32),
            params(6, PARAMS, n_tokens, top_k, n_experts, 0, 1, 0, 0, 0, 0, 0, 0, 0),
        ],
        (1,),
        entry="group",
        flags=(flag("f32"),),
        **common,
    )
    row_words, plane1, plane2 = experts.words("gate")
    gx, gy = grid(-(-experts.ff // 8) * n_experts, None)
    values = (n_tokens, top_k, experts.ff, experts.hidden, gx, row_words, plane1, plane2)
    (h, _) = kernels.run(
        "moe",
        [
            read(0, gate_up.buffer),
            read(1, gate_up.table),
            read(4, x.astype(np.float32)),
            write(5, pairs * experts.ff),
            Buffer(7, "write", array=groups),
            params(6, PARAMS, *values, gate_up.proj_word["gate"], gate_up.proj_word["up"], act, 0),
        ],
        (gx, gy),
        entry="gate_up_grouped",
        flags=(flag(experts.gate_up_layout),),
        **common,
    )
    row_words, plane1, plane2 = experts.words("down")
    gx, gy = grid(-(-experts.hidden // 8) * n_experts, None)
    values = (n_tokens, top_k, experts.hidden, experts.ff, gx, row_words, plane1, plane2)
    (per_pair, _) = kernels.run(
        "moe",
        [
            read(0, down.buffer),
            read(1, down.table),
            read(4, h),
            write(5, pairs * experts.hidden),
            Buffer(7, "write", array=groups),
            params(6, PARAMS, *values, down.proj_word["down"], 0, 0, 0),
        ],
        (gx, gy),
        entry="down_grouped",
        flags=(flag(experts.down_layout),),
        **common,
    )
    size = n_tokens * experts.hidden
    y = write(5, size) if y0 is None else Buffer(5, "write", array=y0.astype(np.float32))
    gx, gy = grid(-(-size // 64), None)
    (out,) = kernels.run(
        "moe",
        [
            read(3, route_weights.astype(np.float32)),
            read(4, per_pair),
            y,
            params(
                6,
                PARAMS,
                n_tokens,
                top_k,
                experts.hidden,
                0,
                gx,
                0,
                0,
                0,
                0,
                0,
                0,
                int(y0 is not None),
            ),
        ],
        (gx, gy),
        entry="combine",
        flags=(flag("f32"),),
        **common,
    )
    return groups, h.reshape(n_tokens, top_k, experts.ff), out.reshape(n_tokens, experts.hidden)


def grouped_ffn(kernels, experts, ids, route_weights, x, **kw):
    gate_up, down = bank(experts, ("gate", "up")), bank(experts, ("down",))
    groups, h, y = run_grouped(kernels, experts, gate_up, down, ids, route_weights, x, **kw)
    flat = ids.reshape(-1)
    starts = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=experts.n_experts))])
    n_experts = experts.n_experts
    assert (groups[: n_experts + 1] == starts).all()
    assert (groups[n_experts + 1 :] == np.argsort(flat, kind="stable")).all()
    h_want, h_bound = gate_up_ref(experts, ids, x, kw.get("act", SILU))
    check(h, (h_want, h_bound))
    check(y, down_ref(experts, ids, route_weights, h_want, h_bound, kw.get("y0")))


@pytest.mark.parametrize(
    ("layout", "n_experts", "hidden", "ff", "n_tokens", "top_k"),
    [
        ("f32", 4, 13, 37, 8, 2),  # every expert shared by several tokens
        ("q4_0", 8, 64, 96, 8, 2),  # Mixtral's routing shape
        ("q8_0", 3, 32, 64, 40, 2),  # more tokens per expert than one batch holds
        ("q4_k", 6, 256, 256, 5, 3),  # some experts chosen by no token
    ],
)
def test_grouped_prefill_matches_numpy(kernels, layout, n_experts, hidden, ff, n_tokens, top_k):
    experts = random_experts(n_experts, hidden, ff, layout)
    ids, route_weights = routing(n_tokens, top_k, n_experts)
    x = RNG.standard_normal((n_tokens, hidden)).astype(np.float32)
    y0 = RNG.standard_normal((n_tokens, hidden)).astype(np.float32)
    grouped_ffn(kernels, experts, ids, route_weights, x, y0=y0)


GROUPED_BUGS = {
    "gate/up reads x of the pair, not the token": (
        "select(pair, pair / params.top_k, per_token)",
        "pair",
    ),
    "combine weighs every choice like the first": (
        "sum += expert_weights[pair] * src",
        "sum += expert_weights[t * params.top_k] * src",
    ),
    "pairs of one expert past a batch dropped": (
        "first += GROUP_BATCH",
        "first += 4u * GROUP_BATCH",
    ),
}


@pytest.mark.parametrize("bug", sorted(GROUPED_BUGS))
def test_grouped_planted_bugs_fail(kernels, bug):
    good, bad = GROUPED_BUGS[bug]
    source = shader_source("moe.wgsl")
    assert good in source, "the planted bug no longer applies: update the control"
    experts = random_experts(3, 32, 64, "q8_0")
    ids, route_weights = routing(40, 2, 3)
    x = RNG.standard_normal((40, 32)).astype(np.float32)
    with pytest.raises(AssertionError):
        grouped_ffn(kernels, experts, ids, route_weights, x, source=source.replace(good, bad))
