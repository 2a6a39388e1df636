// The prefill product with packed weights (every layout of dequant.wgsl, selected by one
// LAYOUT_<NAME> flag), f32 activations and f32 accumulation:
//   matmul: y[t * y_stride + row0 + r] = sum_k W[r, k] x[t * cols + k]  for r < rows, t < n_tokens
// W is the packed tensor (rows, cols): Layout.row_bytes(cols) per row, planes at
// Layout.plane_offsets (docs/layouts.md). cols must be a multiple of 4 (x is read as vec4s;
// other row lengths take matvec_quant.wgsl's matmat).
//
// Split weights: bind one part as `weight`, set rows = its row count and row0 = its first row,
// and dispatch once per part: each dispatch writes only its rows of y.
//
// Split K: with k_blocks < the row's blocks of BK, workgroup z also picks a K slice: slice s
// sums blocks [s k_blocks, (s + 1) k_blocks) and writes y + s * slice_stride, and whoever
// reads y sums the slices (rmsnorm and add take a slice count). Long rows (a down projection
// has 6912) then keep many workgroups busy for a short loop each instead of a few for a long
// one, which leaves most of the GPU idle at prefill's token counts.
//
// A register-tiled matrix-matrix product: each workgroup of WG invocations computes a tile of
// BM rows x BN tokens, stepping K in blocks of BK elements. Per block, the workgroup decodes
// the tile's weights into workgroup memory as f32 (each packed word decoded once per
// workgroup) and loads the x block beside them; then each invocation accumulates TM rows x TN
// tokens in registers, four elements of K per workgroup-memory load. The block after next is
// decoded into registers while the current one is multiplied, so global latency overlaps the
// FMAs. BM x BN x TM x TN leaves 128 invocations per tile, so the workgroup's two halves take
// alternate halves of each block's K (HALVES) and add up at the end: 64-row tiles (twice as
// many workgroups as 128-row ones would give) with 4 x 4 register blocks, in under 16 KiB.
// No subgroup operations: one kernel serves devices with and without them.
//
// Dispatch: (grid_x, ceil(ceil(rows / BM) / grid_x), ceil(n_tokens / BN) * slices),
// grid_x = min(ceil(rows / BM), 65535); row tile = wid.y * grid_x + wid.x; token tile =
// wid.z % ceil(n_tokens / BN), K slice = wid.z / ceil(n_tokens / BN).
// Bindings: weight (0, u32 words), x (1, f32), y (2, f32), params (3).

struct Params {
  rows: u32,       // rows in this weight binding
  cols: u32,       // logical row length (in_features), a multiple of 4
  grid_x: u32,     // workgroups along x: row tile = wid.y * grid_x + wid.x
  row0: u32,       // index in y of this binding's first row (split tensors), else 0
  row_words: u32,  // Layout.row_bytes(cols) / 4
  plane1: u32,     // word offsets in a row of the layout's 2nd and 3rd planes (else 0)
  plane2: u32,
  n_tokens: u32,   // tokens in x and y
  y_stride: u32,   // elements between consecutive tokens in y (the full row count)
  k_blocks: u32,   // blocks of BK per K slice
  slice_stride: u32,  // elements between consecutive K slices' outputs in y
}

@group(0) @binding(0) var<storage, read> weight: array<u32>;
@group(0) @binding(1) var<storage, read> xv: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

#include "dequant.wgsl"

const WG: u32 = 256u;
const BM: u32 = 64u;  // rows per tile
const BN: u32 = 32u;  // tokens per tile (a prefill pass)
const BK: u32 = 32u;  // K per block: a multiple of every layout's UNIT and CHUNK
const TM: u32 = 4u;   // rows per invocation, strided by BM / TM
const TN: u32 = 4u;   // tokens per invocation, strided by BN / TN (one vec4 of sums per row)
const ROW_GROUPS: u32 = BM / TM;
const TOKEN_GROUPS: u32 = BN / TN;
const LANES: u32 = ROW_GROUPS * TOKEN_GROUPS;  // invocations per half
const HALVES: u32 = WG / LANES;                // parts of each block's K, one per invocation group
const KV: u32 = BK / 4u;                       // vec4s of K per block
// Rows of the tiles are KV + 1 vec4s apart, so the 8 consecutive rows (or tokens) that a
// 32-wide warp reads at once fall in distinct banks.
const STRIDE: u32 = KV + 1u;
const UNITS: u32 = BM * BK / UNIT;             // decode units per weight block
const UNITS_PER_INVOCATION: u32 = (UNITS + WG - 1u) / WG;
const X_PER_INVOCATION: u32 = (BN * KV + WG - 1u) / WG;
const_assert TN == 4u && ROW_GROUPS % 8u == 0u && TOKEN_GROUPS % 4u == 0u;  // lane_groups
const_assert WG % LANES == 0u && KV % HALVES == 0u;
const_assert (HALVES - 1u) * LANES * TM <= BM * STRIDE;  // the partial sums fit the w tile

// w_tile[r * STRIDE + k4]: elements 4 k4 .. 4 k4 + 3 of the block of the tile's row r; after
// the K loop it holds the partial sums of the halves past the first (the tile is free then).
var<workgroup> w_tile: array<vec4<f32>, BM * STRIDE>;
var<workgroup> x_tile: array<vec4<f32>, BN * STRIDE>;

// One block's share of this invocation, decoded and loaded, waiting to be stored.
struct Staged {
  w: array<array<vec4<f32>, UNIT / 4u>, UNITS_PER_INVOCATION>,
  x: array<vec4<f32>, X_PER_INVOCATION>,
}

// Unit i of a weight block: (row in the tile, unit index in the row).
fn unit_at(i: u32, kb: u32) -> vec2<u32> {
  return vec2<u32>(i / (BK / UNIT), kb * (BK / UNIT) + i % (BK / UNIT));
}

// x vec4 i of a block: (token in the tile, vec4 index in the row).
fn x_at(i: u32, kb: u32) -> vec2<u32> {
  return vec2<u32>(i / KV, kb * KV + i % KV);
}

// Decode this invocation's units of block kb of the tile's rows from r0 and load its x
// vec4s of the tile's tokens from t0; zero past the rows, the tokens and the row's end.
fn stage(kb: u32, lid: u32, r0: u32, t0: u32) -> Staged {
  var s = Staged();
  for (var p = 0u; p < UNITS_PER_INVOCATION; p++) {
    let i = lid + p * WG;
    let at = unit_at(i, kb);
    // float rows are padded to whole units only: a unit past the row's end is not there
    if (i < UNITS && r0 + at.x < params.rows && at.y * UNIT < params.cols) {
      let w = decode_unit((r0 + at.x) * params.row_words, at.y, params.plane1, params.plane2);
      for (var k = 0u; k < UNIT / 4u; k++) {
        s.w[p][k] = select(vec4<f32>(), w[k], 4u * unit_x4(at.y, k) < params.cols);
      }
    }
  }
  for (var p = 0u; p < X_PER_INVOCATION; p++) {
    let i = lid + p * WG;
    let at = x_at(i, kb);
    if (i < BN * KV && t0 + at.x < params.n_tokens && 4u * at.y < params.cols) {
      s.x[p] = xv[(t0 + at.x) * (params.cols / 4u) + at.y];
    }
  }
  return s;
}

fn store_staged(s: ptr<function, Staged>, kb: u32, lid: u32) {
  for (var p = 0u; p < UNITS_PER_INVOCATION; p++) {
    let i = lid + p * WG;
    if (i < UNITS) {
      let at = unit_at(i, kb);
      for (var k = 0u; k < UNIT / 4u; k++) {
        w_tile[at.x * STRIDE + unit_x4(at.y, k) - kb * KV] = (*s).w[p][k];
      }
    }
  }
  for (var p = 0u; p < X_PER_INVOCATION; p++) {
    let i = lid + p * WG;
    if (i < BN * KV) {
      let at = x_at(i, kb);
      x_tile[at.x * STRIDE + at.y - kb * KV] = (*s).x[p];
    }
  }
}

// (row group, token group) of lane l of a half: each 32 consecutive lanes (a warp on
// NVIDIA) take 8 row groups x 4 token groups, so a warp's loads broadcast to few addresses.
fn lane_groups(l: u32) -> vec2<u32> {
  let warp = l / 32u;
  let rg = l % 8u + 8u * (warp % (ROW_GROUPS / 8u));
  let tg = (l / 8u) % 4u + 4u * (warp / (ROW_GROUPS / 8u));
  return vec2<u32>(rg, tg);
}

// acc[i][j] += rows rg + i ROW_GROUPS . tokens tg + j TOKEN_GROUPS over this half's K of
// the block in workgroup memory.
fn multiply(acc: ptr<function, array<vec4<f32>, TM>>, g: vec2<u32>, half: u32) {
  for (var kk = 0u; kk < KV / HALVES; kk++) {
    let k4 = half * (KV / HALVES) + kk;
    var w = array<vec4<f32>, TM>();
    var xs = array<vec4<f32>, TN>();
    for (var i = 0u; i < TM; i++) { w[i] = w_tile[(g.x + i * ROW_GROUPS) * STRIDE + k4]; }
    for (var j = 0u; j < TN; j++) { xs[j] = x_tile[(g.y + j * TOKEN_GROUPS) * STRIDE + k4]; }
    for (var i = 0u; i < TM; i++) {
      (*acc)[i] += vec4<f32>(dot(w[i], xs[0]), dot(w[i], xs[1]), dot(w[i], xs[2]), dot(w[i], xs[3]));
    }
  }
}

@compute @workgroup_size(WG)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r0 = (wid.y * params.grid_x + wid.x) * BM;
  let token_tiles = (params.n_tokens + BN - 1u) / BN;
  let t0 = (wid.z % token_tiles) * BN;
  let k_slice = wid.z / token_tiles;
  let half = lid / LANES;
  let g = lane_groups(lid % LANES);
  let first = k_slice * params.k_blocks;
  let end = min(first + params.k_blocks, (params.cols + BK - 1u) / BK);
  var acc = array<vec4<f32>, TM>();
  var staged = stage(first, lid, r0, t0);
  for (var kb = first; kb < end; kb++) {
    store_staged(&staged, kb, lid);
    workgroupBarrier();
    if (kb + 1u < end) { staged = stage(kb + 1u, lid, r0, t0); }
    multiply(&acc, g, half);
    workgroupBarrier();
  }
  // halves past the first leave their sums in the (now free) weight tile for the first
  let l = lid % LANES;
  if (half > 0u) {
    for (var i = 0u; i < TM; i++) { w_tile[((half - 1u) * LANES + l) * TM + i] = acc[i]; }
  }
  workgroupBarrier();
  if (half == 0u) {
    for (var s = 1u; s < HALVES; s++) {
      for (var i = 0u; i < TM; i++) { acc[i] += w_tile[((s - 1u) * LANES + l) * TM + i]; }
    }
    store_tile(&acc, g, r0, t0, k_slice * params.slice_stride);
  }
}

fn store_tile(acc: ptr<function, array<vec4<f32>, TM>>, g: vec2<u32>, r0: u32, t0: u32, base: u32) {
  for (var i = 0u; i < TM; i++) {
    let r = r0 + g.x + i * ROW_GROUPS;
    for (var j = 0u; j < TN; j++) {
      let t = t0 + g.y + j * TOKEN_GROUPS;
      if (r < params.rows && t < params.n_tokens) {
        y[base + t * params.y_stride + params.row0 + r] = (*acc)[i][j];
      }
    }
  }
}
