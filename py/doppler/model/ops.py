"""One function per kernel family: add a dispatch of it to a plan, with its Params packed.

Each function mirrors the ``struct Params`` at the top of its WGSL file (field order and
types), so this module and ``shaders/`` are the only two places a kernel's interface lives.
Dispatches that depend on the step (a position, a length) take a function of the
:class:`StepState` instead of fixed bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from doppler.format.layouts import get_layout
from doppler.gpu.plan import Binding, Plan
from doppler.gpu.shaders import PipelineKey
from doppler.jsffi import JsProxy
from doppler.model.weights import Weight, WeightPart

MAX_GRID = 65535
# matvec rows per workgroup: with subgroups the whole workgroup sums 4 rows (one x load per
# unit for them; workgroups of 64, or 256 for rows longer than 2048); without, 8 rows of 8
# invocations in 64.
MATVEC_ROWS_PER_WG = {"subgroups": 4, "fallback": 8}
MATMAT_TOKENS = {"matvec": 1, "matmat": 4}  # tokens per workgroup (matmat's TOKENS)
# matmul_quant.wgsl: rows and tokens per workgroup and K per block (BM, BN, BK); K is split
# into slices of at most SLICE_BLOCKS blocks so that no workgroup runs a long serial loop
# (on an H100, slices of 18, 36 and 72 blocks gave Gemma-3-1B prefill 8.2k, 8.3k, 7.9k tok/s)
MATMUL_TILE = (64, 32, 32)
SLICE_BLOCKS = 36
# sample.wgsl's two-stage sampler: K candidate slots per BLOCK logits; it serves greedy and
# 0 < top_k <= K (anything else scans the whole vocabulary ~65 times).
SAMPLE_K = 64
SAMPLE_BLOCK = 4096


@dataclass(frozen=True)
class Sampling:
    """The sample kernel's knobs (temperature <= 0 is greedy; top_k 0, top_p 1 are off)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    softcap: float = 0.0
    seed: int = 0

    @property
    def two_stage(self) -> bool:
        """Whether the candidates-first sampler chooses exactly as the full one would."""
        return self.temperature <= 0 or 0 < self.top_k <= SAMPLE_K


@dataclass
class StepState:
    """What changes between passes: the sampling options and the RNG step of this draw."""

    sampling: Sampling
    step: int = 0


def pack(fmt: str, *values: float) -> bytes:
    data = struct.pack("<" + fmt, *values)
    return data + b"\0" * (-len(data) % 16)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def grid(groups: int) -> tuple[int, int]:
    """Split a 1-D workgroup count over x and y (WebGPU caps each at 65535)."""
    x = min(groups, MAX_GRID)
    return x, -(-groups // x)


def layout_flag(layout: str) -> str:
    return "LAYOUT_" + layout.upper()


def layout_words(layout: str, row_len: int) -> tuple[int, int, int]:
    """(row_words, plane1, plane2): a row's stride and its 2nd/3rd plane offsets in words."""
    lay = get_layout(layout)
    offsets = [*list(lay.plane_offsets((row_len,)).values())[1:], 0, 0]
    return lay.row_bytes(row_len) // 4, offsets[0] // 4, offsets[1] // 4


def chunk(layout: str) -> int:
    return {"f32": 4, "f16": 8, "bf16": 8}.get(layout, 32)


def embed(
    plan: Plan, table: Weight, ids: JsProxy, out: JsProxy, scale: float, n_tokens: int
) -> None:
    """Gather the rows of ``table`` for the ``n_tokens`` ids in ``ids``, one dispatch per
    part of a split table (each writes only the ids it holds)."""
    hidden = table.row_len
    row_words, plane1, plane2 = layout_words(table.layout, hidden)
    key = PipelineKey("embed", flags=frozenset({layout_flag(table.layout)}))
    groups = ceil_div(ceil_div(hidden, chunk(table.layout)), 64)
    for part in table.parts:
        params = pack(
            "IIIfIIIIII",
            n_tokens,
            hidden,
            table.rows,
            scale,
            row_words,
            plane1,
            plane2,
            0,
            part.row0,
            part.rows,
        )
        plan.add(
            key,
            [Binding(0, part.buffer), Binding(1, ids), Binding(2, out)],
            params,
            (groups, n_tokens),
        )


def rmsnorm(
    plan: Plan,
    x: JsProxy,
    weight: Weight,
    y: JsProxy,
    rows: int,
    eps: float,
    offset: float,
    accumulate: bool = False,
    slices: int = 1,
) -> None:
    """``y = rmsnorm(x)`` per row, or ``y += rmsnorm(x)`` (a post-norm and its residual); x
    may be the ``slices`` K slices of a split-K :func:`matmul`, summed as they are read."""
    (part,), n = weight.parts, weight.row_len
    plan.add(
        PipelineKey("rmsnorm"),
        [Binding(0, x), Binding(1, part.buffer), Binding(2, y)],
        pack("IIffIII", rows, n, eps, offset, int(accumulate), slices, rows * n),
        (rows,),
    )


def rope(
    plan: Plan,
    positions: JsProxy,
    inv_freq: JsProxy,
    q: JsProxy,
    k: JsProxy,
    shape: tuple[int, int, int, int, int],
    interleaved: bool,
) -> None:
    """``shape`` = (n_tokens, n_heads, n_kv_heads, head_dim, rot_dim)."""
    n_tokens, n_heads, n_kv_heads, _head_dim, rot_dim = shape
    wg = 64
    groups = -(-((n_heads + n_kv_heads) * rot_dim // 2) // wg)
    plan.add(
        PipelineKey("rope"),
        [Binding(0, positions), Binding(1, inv_freq), Binding(2, q), Binding(3, k)],
        pack("IIIIIIII", *shape, int(interleaved), 0, 0),
        (groups, n_tokens),
    )


ACTIVATIONS = {"silu": 0, "gelu_tanh": 1}


def gated(plan: Plan, gate: JsProxy, up: JsProxy, out: JsProxy, n: int, activation: str) -> None:
    gx, gy = grid(-(-n // 256))
    plan.add(
        PipelineKey("activation", entry="gated"),
        [Binding(0, gate), Binding(1, up), Binding(2, out)],
        pack("IIIIII", n, n, ACTIVATIONS[activation], gx, 1, 0),
        (gx, gy),
    )


def add(
    plan: Plan, x: JsProxy, y: JsProxy, n: int, period: int | None = None, slices: int = 1
) -> None:
    """``y += x`` (a residual), or a bias of length ``period`` broadcast over rows of ``y``;
    x may be the ``slices`` K slices of a split-K :func:`matmul`, summed."""
    gx, gy = grid(-(-n // 256))
    plan.add(
        PipelineKey("activation", entry="add"),
        [Binding(0, x), Binding(1, y)],
        pack("IIIIII", n, period or n, 0, gx, slices, n),
        (gx, gy),
    )


@dataclass(frozen=True)
class KvRoute:
    """Where a fused [q; k; v] projection's k and v rows go (rows from ``k_row0`` to
    ``k_out``, from ``v_row0`` to ``v_out``; the q rows before them to y)."""

    k_out: JsProxy
    v_out: JsProxy
    k_row0: int
    v_row0: int


@dataclass(frozen=True)
class Fold:
    """What a decode ``matvec`` folds in around ``W x`` (see matvec_quant.wgsl's modes):
    an RMSNorm of x (``norm`` weight, ``eps``, ``offset``), then either ``y += W x``
    (``accumulate``) or ``y = act(gate) * W x`` (``gate`` buffer, ``activation``), or, for a
    [gate; up] weight, ``y = act(gate rows x) * (up rows x)`` (``pair`` = the first up row).
    With subgroups, the k and v rows of a projection can go elsewhere (``kv``): into KV
    caches written at ``positions[0]`` (``cache`` = (positions, head_dim, max_ctx)), k
    rotated by RoPE first (``rope`` = (inv_freq, rot_dim, interleaved))."""

    norm: Weight | None = None
    eps: float = 0.0
    offset: float = 0.0
    accumulate: bool = False
    gate: JsProxy | None = None
    activation: str = "silu"
    pair: int = 0
    kv: KvRoute | None = None
    cache: tuple[JsProxy, int, int] | None = None
    rope: tuple[JsProxy, int, bool] | None = None

    def mode(self) -> int:
        gated = self.gate is not None or self.pair > 0
        return (
            MODE_ACCUMULATE * self.accumulate
            + MODE_GATED * (self.gate is not None)
            + MODE_GELU * (gated and self.activation == "gelu_tanh")
            + MODE_NORM * (self.norm is not None)
            + MODE_KV * (self.kv is not None)
            + MODE_ROPE * (self.rope is not None)
            + MODE_CACHE * (self.cache is not None)
            + MODE_PAIR * (self.pair > 0)
        )


MODE_ACCUMULATE, MODE_GATED, MODE_GELU, MODE_NORM = 1, 2, 4, 8
MODE_KV, MODE_ROPE, MODE_CACHE, MODE_PAIR = 16, 32, 64, 128


def k_slices(row_len: int, n_tokens: int) -> int:
    """K slices of the product of rows of ``row_len`` for ``n_tokens`` tokens (see
    :func:`matmul`)."""
    if n_tokens == 1 or row_len % 4:
        return 1
    return ceil_div(ceil_div(row_len, MATMUL_TILE[2]), SLICE_BLOCKS)


def _product_fields(
    weight: Weight, part: WeightPart, rows: int, grid_x: int, n_tokens: int
) -> tuple[int, ...]:
    """The Params fields that matvec_quant.wgsl and matmul_quant.wgsl share, in order: rows,
    cols, grid_x, row0, row_words, plane1, plane2, n_tokens, y_stride (all of y's rows)."""
    row_words, plane1, plane2 = layout_words(weight.layout, weight.row_len)
    layout = (row_words, plane1, plane2)
    return (rows, weight.row_len, grid_x, part.row0, *layout, n_tokens, weight.rows)


def matmul(
    plan: Plan, weight: Weight, x: JsProxy, y: JsProxy, n_tokens: int, slices: int = 1
) -> None:
    """``y[t] = W x[t]`` for ``n_tokens`` tokens (the prefill product; rows of a multiple of
    4): matmul_quant.wgsl's register-tiled kernel, one dispatch per weight part. With
    ``slices`` > 1, K is split and y holds that many slices (n_tokens * weight.rows apart)
    for the reader to sum."""
    key = PipelineKey("matmul_quant", entry="matmul", flags=frozenset({layout_flag(weight.layout)}))
    tile_rows, tile_tokens, tile_k = MATMUL_TILE
    k_blocks = ceil_div(ceil_div(weight.row_len, tile_k), slices)
    for part in weight.parts:
        gx, gy = grid(ceil_div(part.rows, tile_rows))
        fields = _product_fields(weight, part, part.rows, gx, n_tokens)
        params = pack("I" * 11, *fields, k_blocks, n_tokens * weight.rows)
        groups = (gx, gy, ceil_div(n_tokens, tile_tokens) * slices)
        weights = Binding(0, part.buffer, part.offset, part.nbytes)
        plan.add(key, [weights, Binding(1, x), Binding(2, y)], params, groups, params_binding=3)


def matvec(
    plan: Plan,
    weight: Weight,
    x: JsProxy,
    y: JsProxy,
    n_tokens: int,
    fold: Fold | None = None,
    slices: int = 1,
) -> None:
    """``y = W x`` for one token (or :func:`matmul` for several, split into ``slices`` along
    K), one dispatch per weight part. ``fold`` (one token only) folds a norm, a residual add
    or a gated activation into it; rows whose length is not a multiple of 4 take ``matmat``
    (vec4 loads cannot)."""
    fold = fold or Fold()
    if fold.mode() and (n_tokens != 1 or weight.row_len % 4):
        raise ValueError(f"{weight.name}: folds need one token and rows of a multiple of 4")
    routed = fold.kv is not None or fold.pair > 0
    if routed and ("subgroups" not in plan.features or len(weight.parts) > 1):
        raise ValueError(f"{weight.name}: kv and pair folds need subgroups and one weight part")
    vector = weight.row_len % 4 == 0
    if vector and n_tokens > 1:
        matmul(plan, weight, x, y, n_tokens, slices)
        return
    assert slices == 1, "only matmul splits K"
    entry = "matvec" if vector else "matmat"
    subgroups = "subgroups" in plan.features
    rows_per_wg = MATVEC_ROWS_PER_WG["subgroups" if subgroups else "fallback"]
    constants: tuple[tuple[str, int], ...] = (("ROWS_PER_WG", rows_per_wg),)
    if entry == "matvec" and subgroups and weight.row_len > 2048:
        constants += (("WG", 256),)
    flags = {layout_flag(weight.layout)} | ({"KV_OUT"} if fold.kv else set())
    key = PipelineKey(
        "matvec_quant",
        entry=entry,
        flags=frozenset(flags),
        constants=constants if vector else (),
    )
    extra = []
    positions, head_dim, max_ctx = fold.cache or (x, 0, 0)
    inv_freq, rot_dim, interleaved = fold.rope or (x, 0, False)
    if entry == "matvec":
        norm = fold.norm.parts[0].buffer if fold.norm else x
        extra = [Binding(4, norm), Binding(6, positions), Binding(7, inv_freq)]
        if fold.kv is not None:
            extra += [Binding(5, fold.kv.k_out), Binding(8, fold.kv.v_out)]
        else:
            extra += [Binding(5, fold.gate if fold.gate is not None else x)]
    k_row0, v_row0 = (fold.kv.k_row0, fold.kv.v_row0) if fold.kv else (0, 0)
    for part in weight.parts:
        rows = fold.pair or part.rows  # a pair's outputs: one per (gate, up) row
        gx, gy = grid(ceil_div(rows, rows_per_wg) if vector else rows)
        params = pack(
            "IIIIIIIIIIffIIIIIII",
            *_product_fields(weight, part, rows, gx, n_tokens),
            fold.mode(),
            fold.eps,
            fold.offset,
            head_dim,
            max_ctx,
            rot_dim,
            int(interleaved),
            k_row0,
            v_row0,
            fold.pair,
        )
        groups = (gx, gy, ceil_div(n_tokens, MATMAT_TOKENS[entry]))
        weights = Binding(0, part.buffer, part.offset, part.nbytes)
        bindings = [weights, Binding(1, x), Binding(2, y), *extra]
        plan.add(key, bindings, params, groups, params_binding=3)


@dataclass(frozen=True)
class AttentionShape:
    n_tokens: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    max_ctx: int
    window: int
    scale: float
    softcap: float
    split_len: int  # split-K attention: keys per split, and splits per query
    n_splits: int
    rope_dim: int = 0  # > 0: attention norms (q_normed) and rotates the queries itself
    interleaved: bool = False
    q_normed: bool = False
    eps: float = 0.0
    norm_offset: float = 0.0

    def params(self) -> bytes:
        return pack(
            "IIIIIIffIIIIIff",
            self.n_tokens,
            self.n_heads,
            self.n_kv_heads,
            self.head_dim,
            self.max_ctx,
            self.window,
            self.scale,
            self.softcap,
            self.split_len,
            self.n_splits,
            self.rope_dim,
            int(self.interleaved),
            int(self.q_normed),
            self.eps,
            self.norm_offset,
        )


def kv_write(
    plan: Plan,
    k: JsProxy,
    v: JsProxy,
    positions: JsProxy,
    caches: tuple[JsProxy, JsProxy],
    shape: AttentionShape,
) -> None:
    groups = ceil_div(shape.n_kv_heads * shape.head_dim, 64)
    plan.add(
        PipelineKey("attention", entry="kv_write"),
        [
            Binding(0, k),
            Binding(1, v),
            Binding(2, positions),
            Binding(3, caches[0]),
            Binding(4, caches[1]),
        ],
        shape.params(),
        (groups, shape.n_tokens),
    )


def rope_store(
    plan: Plan,
    positions: JsProxy,
    inv_freq: JsProxy,
    kv: tuple[JsProxy, JsProxy],
    caches: tuple[JsProxy, JsProxy],
    shape: AttentionShape,
    k_norm: Weight | None = None,
) -> None:
    """rope.wgsl's rope_store: k RMS-normed by ``k_norm`` (where given) and rotated into the
    cache, v copied there; :func:`attention` norms and rotates the queries itself
    (``shape.rope_dim``)."""
    k, v = kv
    params = pack(
        "IIIIIIIff",
        shape.n_tokens,
        shape.n_kv_heads,
        shape.head_dim,
        shape.rope_dim,
        int(shape.interleaved),
        shape.max_ctx,
        int(k_norm is not None),
        shape.eps,
        shape.norm_offset,
    )
    bindings = [
        Binding(0, positions),
        Binding(1, inv_freq),
        Binding(3, k),
        Binding(4, v),
        Binding(5, caches[0]),
        Binding(6, caches[1]),
        Binding(7, k_norm.parts[0].buffer if k_norm is not None else inv_freq),
    ]
    plan.add(
        PipelineKey("rope", entry="rope_store"),
        bindings,
        params,
        (shape.n_kv_heads, shape.n_tokens),
        params_binding=8,
    )


def attention(
    plan: Plan,
    q: JsProxy,
    caches: tuple[JsProxy, JsProxy],
    positions: JsProxy,
    out: JsProxy,
    shape: AttentionShape,
    partials: JsProxy,
    rope: tuple[JsProxy, JsProxy | None] | None = None,
) -> None:
    """Split-K attention: each query's keys split among ``shape.n_splits`` workgroups
    (partials in ``partials``), then combined. With ``shape.rope_dim``, ``rope`` =
    (inv_freq, q norm weights or None) for the queries."""
    if shape.head_dim % 4 or shape.head_dim > 512:
        raise ValueError(f"attention reads heads as vec4s, up to 512: head_dim {shape.head_dim}")
    sources = [Binding(0, q), Binding(1, caches[0]), Binding(2, caches[1]), Binding(3, positions)]
    inv_freq, q_norm = rope if rope is not None else (positions, None)
    sources += [Binding(6, inv_freq), Binding(7, q_norm if q_norm is not None else inv_freq)]
    plan.add(
        PipelineKey("attention", entry="split"),
        [*sources, Binding(4, partials)],
        shape.params(),
        (shape.n_heads, shape.n_tokens, shape.n_splits),
        params_binding=5,
    )
    plan.add(
        PipelineKey("attention", entry="combine"),
        [Binding(0, partials), Binding(1, out)],
        shape.params(),
        (shape.n_heads, shape.n_tokens),
        params_binding=5,
    )


@dataclass
class Candidates:
    """The two-stage sampler's scratch: K slots per block of logits, an overflow flag each."""

    value: JsProxy  # f32 [blocks * SAMPLE_K]
    index: JsProxy  # u32 [blocks * SAMPLE_K]
    overflow: JsProxy  # u32 [blocks]

    @staticmethod
    def blocks(vocab: int) -> int:
        return ceil_div(vocab, SAMPLE_BLOCK)


def sample(
    plan: Plan,
    logits: JsProxy,
    token: JsProxy,
    ring: JsProxy,
    vocab: int,
    ring_len: int,
    candidates: Candidates | None = None,
) -> None:
    """Choose the next token on the GPU into ``token`` (the next embed's input) and into
    slot ``step % ring_len`` of ``ring``, with the options of the pass's :class:`StepState`.
    With ``candidates``, the two-stage sampler, only for options whose ``two_stage`` holds."""

    def params(state: StepState) -> bytes:
        options, step = state.sampling, state.step
        return pack(
            "IIfffIIII",
            vocab,
            options.top_k,
            options.top_p,
            options.temperature,
            options.softcap,
            options.seed & 0xFFFFFFFF,
            step,
            1,
            ring_len,
        )

    outputs = [Binding(0, logits), Binding(1, token), Binding(2, ring)]
    if candidates is None:
        plan.add(PipelineKey("sample", entry="sample"), outputs, params, (1,), params_binding=3)
        return
    flags = frozenset({"CANDIDATES"})
    lists = [
        Binding(4, candidates.value),
        Binding(5, candidates.index),
        Binding(6, candidates.overflow),
    ]
    plan.add(
        PipelineKey("sample", "candidates", flags),
        [Binding(0, logits), *lists],
        params,
        (Candidates.blocks(vocab),),
        params_binding=3,
    )
    plan.add(
        PipelineKey("sample", "sample", flags), [*outputs, *lists], params, (1,), params_binding=3
    )
