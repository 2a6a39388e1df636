#if HAS_SUBGROUPS
enable subgroups;
diagnostic(off, subgroup_uniformity);
#endif
// Products with packed weights (every layout of dequant.wgsl, selected by one LAYOUT_<NAME>
// flag), f32 activations and f32 accumulation:
//   matvec: y[row0 + r]                  = sum_k W[r, k] x[k]          (decode)
//   matmat: y[t * y_stride + row0 + r]   = sum_k W[r, k] x[t * cols + k], t < n_tokens (prefill)
// for r < rows. W is the packed tensor (rows, cols): Layout.row_bytes(cols) per row, planes
// at Layout.plane_offsets (docs/layouts.md).
//
// Split weights: a tensor larger than maxStorageBufferBindingSize is stored as row parts (see
// doppler.model.weights); bind one part as `weight`, set rows = its row count and row0 = its
// first row, and dispatch once per part: each dispatch writes only its rows of y.
//
// matvec: ROWS_PER_WG rows per workgroup, WG / ROWS_PER_WG invocations per row striding over
// the row's chunks (CHUNK weights each, decoded once), then a sum among them. matmat: one workgroup per (row, tile of TOKENS tokens);
// each decoded chunk is used for all TOKENS tokens of the tile.
// Dispatch: matvec (grid_x, ceil(ceil(rows / ROWS_PER_WG) / grid_x)), grid_x =
// min(ceil(rows / ROWS_PER_WG), 65535); matmat (grid_x, ceil(rows / grid_x),
// ceil(n_tokens / TOKENS)), grid_x = min(rows, 65535). WG must be a power of two.
// Bindings: weight (0, u32 words), x (1, f32), y (2, f32), params (3).

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
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read> weight: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 64;
override ROWS_PER_WG: u32 = 8;  // matvec: rows per workgroup (a power of two dividing WG)
const TOKENS: u32 = 4u;

#include "dequant.wgsl"
#include "reduce.wgsl"

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

#if HAS_SUBGROUPS
// With subgroups, each subgroup takes rows of this workgroup's ROWS_PER_WG from a counter
// (so neither the subgroup size nor how invocations map to subgroups matters), strides
// over a row's chunks with its lanes and sums them with subgroupAdd: no workgroup barriers.
var<workgroup> next_row: atomic<u32>;

@compute @workgroup_size(WG)
fn matvec(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) lanes: u32,
) {
  if (lid == 0u) { atomicStore(&next_row, 0u); }
  workgroupBarrier();
  let first = (wid.y * params.grid_x + wid.x) * ROWS_PER_WG;
  loop {
    var claimed = 0u;
    if (subgroupElect()) { claimed = atomicAdd(&next_row, 1u); }
    let i = subgroupBroadcastFirst(claimed);
    if (i >= ROWS_PER_WG) { break; }
    let r = first + i;
    var sum = 0.0;
    if (r < params.rows) {
      for (var c = lane; c < chunks(); c += lanes) {
        var w = decode_chunk(r * params.row_words, c, params.plane1, params.plane2);
        sum += chunk_dot(&w, 0u, c * CHUNK);
      }
    }
    let total = subgroupAdd(sum);
    if (lane == 0u && r < params.rows) { y[params.row0 + r] = total; }
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
  var sum = 0.0;
  if (r < params.rows) {
    for (var c = lane; c < chunks(); c += lanes) {
      var w = decode_chunk(r * params.row_words, c, params.plane1, params.plane2);
      sum += chunk_dot(&w, 0u, c * CHUNK);
    }
  }
  red[lid] = sum;
  workgroupBarrier();
  for (var stride = lanes / 2u; stride > 0u; stride /= 2u) {
    if (lane < stride) { red[lid] += red[lid + stride]; }
    workgroupBarrier();
  }
  if (lane == 0u && r < params.rows) { y[params.row0 + r] = red[lid]; }
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
