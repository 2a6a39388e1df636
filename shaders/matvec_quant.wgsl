#if HAS_SUBGROUPS
enable subgroups;
diagnostic(off, subgroup_uniformity);
#endif
// Products with packed weights (every layout of dequant.wgsl, selected by one LAYOUT_<NAME>
// flag), f32 activations and f32 accumulation:
//   matvec: y[row0 + r]                  = sum_k W[r, k] x[k]          (decode)
//   matmat: y[t * y_stride + row0 + r]   = sum_k W[r, k] x[t * cols + k], t < n_tokens
//           (prefill of rows whose length is not a multiple of 4; matmul_quant.wgsl does
//           the others)
// for r < rows. W is the packed tensor (rows, cols): Layout.row_bytes(cols) per row, planes
// at Layout.plane_offsets (docs/layouts.md).
//
// Split weights: a tensor larger than maxStorageBufferBindingSize is stored as row parts (see
// doppler.model.weights); bind one part as `weight`, set rows = its row count and row0 = its
// first row, and dispatch once per part: each dispatch writes only its rows of y.
//
// matvec reads x as vec4s (cols must be a multiple of 4) and walks each row in units of
// dequant.wgsl (one nibble word of a 32-block, or one chunk), decoded straight into dot
// products. Its `mode` folds neighbouring kernels into the product (decode only):
//   MODE_NORM:       x -> rmsnorm(x) * (norm + norm_offset): each subgroup (or workgroup)
//                    sums x^2 itself, so the separate RMSNorm dispatch goes;
//   MODE_ACCUMULATE: y[i] += product (a residual add);
//   MODE_GATED:      y[i] = act(gate[i]) * product, act = SiLU or (MODE_GELU) GELU-tanh;
//   MODE_PAIR:       (with subgroups) W is [gate; up] and y[i] = act(W[i] x) * W[pair_row0 + i] x
//                    for i < rows (the output rows): one dispatch for a gated FFN's two
//                    projections, act by MODE_GELU as above.
// With subgroups, the whole workgroup works on GROUP rows at a time (x is loaded once per
// GROUP rows; their sums are one vec4). Without subgroups, WG / ROWS_PER_WG invocations per
// row and a tree in workgroup memory.
// matmat: any row length (scalar x): one workgroup per (row, tile of TOKENS tokens); each
// decoded chunk is used for all TOKENS tokens of the tile.
// Dispatch: matvec (grid_x, ceil(ceil(rows / ROWS_PER_WG) / grid_x)), grid_x =
// min(ceil(rows / ROWS_PER_WG), 65535);
// matmat (grid_x, ceil(rows / grid_x), ceil(n_tokens / TOKENS)), grid_x = min(rows, 65535).
// WG must be a power of two.
// With the KV_OUT flag (subgroups only) the gate binding gives way to k_out and v_out, so
// one dispatch can serve a layer's fused [q; k; v] projection:
//   MODE_KV:         rows [k_row0, v_row0) go to k_out[r - k_row0] and rows [v_row0, rows)
//                    to v_out[r - v_row0]; rows before k_row0 to y (k_row0 and v_row0
//                    multiples of GROUP, so no group straddles two outputs);
//   MODE_CACHE:      (with MODE_KV, one token) k_out and v_out are KV caches [heads, max_ctx,
//                    head_dim]: k/v row h * head_dim + d goes to position positions[0] of
//                    head h (nothing past max_ctx);
//   MODE_ROPE:       (with MODE_KV) RoPE of rope_dim dims (inv_freq) on each k head first, so a
//                    k projection writes the cache directly (ROWS_PER_WG a multiple of 4).
// Bindings: weight (0, u32 words), x (1, f32), y (2, f32), params (3); matvec also norm (4,
// f32, >= cols), gate (5, f32, y's length; KV_OUT: k_out), positions (6, u32), inv_freq (7,
// f32) and with KV_OUT v_out (8): bind any other read-only buffers when unused.

struct Params {
  rows: u32,       // rows in this weight binding
  cols: u32,       // logical row length (in_features)
  grid_x: u32,     // workgroups along x: row = wid.y * grid_x + wid.x
  row0: u32,       // index in y of this binding's first row (split tensors), else 0
  row_words: u32,  // Layout.row_bytes(cols) / 4
  plane1: u32,     // word offsets in a row of the layout's 2nd and 3rd planes (else 0)
  plane2: u32,
  n_tokens: u32,   // matmat: tokens in x and y (matvec ignores it)
  y_stride: u32,   // matmat: elements between consecutive tokens in y (the full row count)
  mode: u32,       // matvec: MODE_* bits
  eps: f32,        // MODE_NORM: the RMSNorm's epsilon and weight offset
  norm_offset: f32,
  head_dim: u32,   // MODE_CACHE / MODE_ROPE: the rows are kv heads of head_dim rows
  max_ctx: u32,    // MODE_CACHE: positions per kv head in the cache
  rope_dim: u32,   // MODE_ROPE: rotated dims per head (a multiple of 4) and the pairing
  interleaved: u32,
  k_row0: u32,     // MODE_KV: the first k row and the first v row
  v_row0: u32,
  pair_row0: u32,  // MODE_PAIR: the first up row
}

const MODE_ACCUMULATE: u32 = 1u;
const MODE_GATED: u32 = 2u;
const MODE_GELU: u32 = 4u;
const MODE_NORM: u32 = 8u;
const MODE_KV: u32 = 16u;
const MODE_ROPE: u32 = 32u;
const MODE_CACHE: u32 = 64u;
const MODE_PAIR: u32 = 128u;

@group(0) @binding(0) var<storage, read> weight: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> xv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;
@group(0) @binding(4) var<storage, read> norm: array<vec4<f32>>;
#if KV_OUT
@group(0) @binding(5) var<storage, read_write> k_out: array<f32>;
@group(0) @binding(8) var<storage, read_write> v_out: array<f32>;
#else
@group(0) @binding(5) var<storage, read> gate: array<f32>;
#endif
@group(0) @binding(6) var<storage, read> positions: array<u32>;
@group(0) @binding(7) var<storage, read> inv_freq: array<f32>;

override WG: u32 = 64;
override ROWS_PER_WG: u32 = 8;  // matvec: rows per workgroup (a power of two dividing WG)
const TOKENS: u32 = 4u;
const GROUP: u32 = 4u;  // matvec with subgroups: rows a subgroup sums at once

#include "dequant.wgsl"
#include "reduce.wgsl"
#include "act.wgsl"
#include "rotary.wgsl"

// Sum over one decoded chunk of w[e] * x[x_base + k0 + e], masking past the row's end.
// Whole chunks take a loop of constant length, which compilers unroll so the decoded values
// stay in registers; only a row's last, partial chunk loops to a run-time bound.
fn chunk_dot(w: ptr<function, array<f32, CHUNK>>, x_base: u32, k0: u32) -> f32 {
  var sum = 0.0;
  if (k0 + CHUNK <= params.cols) {
    for (var e = 0u; e < CHUNK; e++) { sum += (*w)[e] * x[x_base + k0 + e]; }
  } else {
    let count = params.cols - k0;
    for (var e = 0u; e < count; e++) { sum += (*w)[e] * x[x_base + k0 + e]; }
  }
  return sum;
}

fn chunks() -> u32 {
  return (params.cols + CHUNK - 1u) / CHUNK;
}

fn has(bit: u32) -> bool {
  return (params.mode & bit) != 0u;
}

// x[4v .. 4v + 4) as matvec multiplies it: zero past the row, times the norm weights.
fn x_vec(v: u32) -> vec4<f32> {
  if (4u * v >= params.cols) { return vec4<f32>(); }
  if (has(MODE_NORM)) { return xv[v] * (norm[v] + params.norm_offset); }
  return xv[v];
}

// This invocation's share (units lane, lane + lanes, ...) of x . x, for MODE_NORM.
fn x_squares(lane: u32, lanes: u32) -> f32 {
  var sum = 0.0;
  for (var v = lane; v < params.cols / 4u; v += lanes) { sum += dot(xv[v], xv[v]); }
  return sum;
}

fn norm_scale(sum_squares: f32) -> f32 {
  if (!has(MODE_NORM)) { return 1.0; }
  return inverseSqrt(sum_squares / f32(params.cols) + params.eps);
}

// Partial products of rows r0 .. r0 + n - 1 (n <= GROUP) over units lane, lane + lanes, ...
// of the row: the x values of a unit are loaded once for all n rows.
fn rows_dot(r0: u32, n: u32, lane: u32, lanes: u32) -> vec4<f32> {
  var acc = vec4<f32>();
  let units = (params.cols + UNIT - 1u) / UNIT;
  for (var u = lane; u < units; u += lanes) {
    var xs: array<vec4<f32>, UNIT / 4u>;
    for (var k = 0u; k < UNIT / 4u; k++) { xs[k] = x_vec(unit_x4(u, k)); }
    for (var j = 0u; j < GROUP; j++) {
      if (j < n) {
        let w = decode_unit(row_of(r0 + j) * params.row_words, u, params.plane1, params.plane2);
        var sum = 0.0;
        for (var k = 0u; k < UNIT / 4u; k++) { sum += dot(w[k], xs[k]); }
        acc[j] += sum;
      }
    }
  }
  return acc;
}

fn is_k_row(v: u32) -> bool {
  return has(MODE_KV) && v >= params.k_row0 && v < params.v_row0;
}

// MODE_ROPE orders the rows of each k head so that rows 2p and 2p + 1 of it are the dims
// that RoPE's pair p rotates together (p < rope_dim / 2); a GROUP then holds two whole pairs.
fn row_of(v: u32) -> u32 {
  if (!has(MODE_ROPE) || !is_k_row(v)) { return v; }
  let head = (v - params.k_row0) / params.head_dim;
  let j = (v - params.k_row0) % params.head_dim;
  if (j >= params.rope_dim) { return v; }
  let dims = pair_dims(j / 2u, params.rope_dim, params.interleaved != 0u);
  return params.k_row0 + head * params.head_dim + dims[j % 2u];
}

// A group's finished products (rows r0 .. r0 + n - 1) through the mode's epilogue; MODE_ROPE
// rotates the two pairs of a k group first (the group starts a pair: r0 is a multiple of
// GROUP).
fn store_group(r0: u32, n: u32, sums: vec4<f32>) {
  var values = sums;
  let pos = positions[0];
  let in_head = (r0 - params.k_row0) % params.head_dim;
  if (has(MODE_ROPE) && is_k_row(r0) && in_head < params.rope_dim) {
    let p = in_head / 2u;
    let first = rotate(values.xy, cos_sin(f32(pos) * inv_freq[p]));
    let second = rotate(values.zw, cos_sin(f32(pos) * inv_freq[p + 1u]));
    values = vec4<f32>(first, second);
  }
  for (var j = 0u; j < n; j++) {
    let r = row_of(r0 + j);
#if KV_OUT
    if (has(MODE_KV) && r >= params.k_row0) {
      store_kv(r, values[j], pos);
      continue;
    }
#endif
    store(r, values[j]);
  }
}

#if KV_OUT
// A k or v row (MODE_KV) into k_out or v_out: flat, or at its cache position (MODE_CACHE).
fn store_kv(r: u32, value: f32, pos: u32) {
  let is_v = r >= params.v_row0;
  var i = r - select(params.k_row0, params.v_row0, is_v);
  if (has(MODE_CACHE)) {
    if (pos >= params.max_ctx) { return; }
    i = ((i / params.head_dim) * params.max_ctx + pos) * params.head_dim + i % params.head_dim;
  }
  if (is_v) { v_out[i] = value; } else { k_out[i] = value; }
}
#endif

// Row r's finished product into y, through the mode's epilogue.
fn store(r: u32, value: f32) {
  let i = params.row0 + r;
  if (has(MODE_ACCUMULATE)) {
    y[i] += value;
#if !KV_OUT
  } else if (has(MODE_GATED)) {
    let g = gate[i];
    y[i] = activate(g) * value;
#endif
  } else {
    y[i] = value;
  }
}

fn activate(g: f32) -> f32 {
  return select(silu(g), gelu_tanh(g), has(MODE_GELU));
}

#if HAS_SUBGROUPS
// It numbers matvec's invocations 0 .. WG - 1 so that each subgroup's lanes are consecutive,
// whatever the subgroup size and layout.
var<workgroup> next_row: atomic<u32>;
var<workgroup> partials: array<vec4<f32>, WG>;
var<workgroup> pair_partials: array<vec4<f32>, WG>;  // MODE_PAIR: the up rows' sums

// The whole workgroup strides over the units of each GROUP of its ROWS_PER_WG rows (split-K,
// so long rows and few rows still fill the GPU); each invocation leaves its GROUP sums in
// `partials` and the subgroup holding invocation 0 adds them up with subgroupAdd.
@compute @workgroup_size(WG)
fn matvec(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) lanes: u32,
) {
  if (lid == 0u) { atomicStore(&next_row, 0u); }
  workgroupBarrier();
  let count = subgroupAdd(1u);
  var base = 0u;
  if (subgroupElect()) { base = atomicAdd(&next_row, count); }
  base = subgroupBroadcastFirst(base);
  let index = base + subgroupExclusiveAdd(1u);
  var squares = 0.0;
  if (has(MODE_NORM)) { squares = subgroupAdd(x_squares(lane, lanes)); }
  let scale = norm_scale(squares);
  let first = (wid.y * params.grid_x + wid.x) * ROWS_PER_WG;
  let end = min(first + ROWS_PER_WG, params.rows);
  let pair = has(MODE_PAIR);
  for (var r0 = first; r0 < end; r0 += GROUP) {
    let n = min(GROUP, end - r0);
    partials[index] = rows_dot(r0, n, index, WG);
    if (pair) { pair_partials[index] = rows_dot(params.pair_row0 + r0, n, index, WG); }
    workgroupBarrier();
    if (base == 0u) {
      var total = vec4<f32>();
      var up = vec4<f32>();
      for (var i = index; i < WG; i += count) {
        total += partials[i];
        if (pair) { up += pair_partials[i]; }
      }
      total = subgroupAdd(total) * scale;
      up = subgroupAdd(up) * scale;
      if (index == 0u) {
        if (pair) {
          for (var j = 0u; j < n; j++) { store(r0 + j, activate(total[j]) * up[j]); }
        } else {
          store_group(r0, n, total);
        }
      }
    }
    workgroupBarrier();
  }
}
#else
@compute @workgroup_size(WG)
fn matvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  // ROWS_PER_WG rows per workgroup, LANES = WG / ROWS_PER_WG invocations per row: short rows
  // keep every invocation busy, and there are ROWS_PER_WG times fewer workgroups.
  let lanes = WG / ROWS_PER_WG;
  let lane = lid % lanes;
  let r = (wid.y * params.grid_x + wid.x) * ROWS_PER_WG + lid / lanes;
  var scale = 1.0;
  if (has(MODE_NORM)) { scale = norm_scale(wg_sum(lid, x_squares(lid, WG))); }
  var sum = 0.0;
  if (r < params.rows) { sum = rows_dot(r, 1u, lane, lanes).x; }
  red[lid] = sum;
  workgroupBarrier();
  for (var stride = lanes / 2u; stride > 0u; stride /= 2u) {
    if (lane < stride) { red[lid] += red[lid + stride]; }
    workgroupBarrier();
  }
  // one row per group here: MODE_ROPE needs the subgroup variant's groups
  if (lane == 0u && r < params.rows) { store_group(r, 1u, vec4<f32>(red[lid] * scale)); }
}
#endif

@compute @workgroup_size(WG)
fn matmat(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * params.grid_x + wid.x;
  if (r >= params.rows) { return; }
  let t0 = wid.z * TOKENS;
  let tokens = min(TOKENS, params.n_tokens - min(t0, params.n_tokens));
  var sums: array<f32, TOKENS>;
  for (var c = lid; c < chunks(); c += WG) {
    var w = decode_chunk(r * params.row_words, c, params.plane1, params.plane2);
    for (var i = 0u; i < tokens; i++) { sums[i] += chunk_dot(&w, (t0 + i) * params.cols, c * CHUNK); }
  }
  for (var i = 0u; i < TOKENS; i++) {
    let total = wg_sum(lid, sums[i]);
    if (lid == 0u && i < tokens) { y[(t0 + i) * params.y_stride + params.row0 + r] = total; }
  }
}
