// Mixture-of-Experts FFN with the routing read from GPU buffers (router.wgsl's ids and
// weights), so a fully resident model decodes with no readback. For token t and its choice
// j < top_k (pair p = t * top_k + j, expert e = expert_ids[p], weight w = expert_weights[p]):
//   gate_up: h[p, r] = act(W_gate[e][r] . x[t]) * (W_up[e][r] . x[t])          r < ff
//   down:    y[t, r] = (accumulate ? y[t, r] : 0) + sum_j w * (W_down[e][r] . h[p])  r < hidden
// act = SiLU (Mixtral, Qwen-MoE, OLMoE, DeepSeek) or GELU-tanh. `down` owns whole output
// rows and loops over the k experts itself, so there are no float atomics and no races;
// accumulate = 1 adds the MoE output into y (the residual stream, or a shared expert's
// output) in the same pass. Weights: any layout of dequant.wgsl (one LAYOUT_<NAME> flag per
// pipeline; gate_up and down may use different layouts), f32 activations and accumulation.
//
// Expert addressing: every expert's weights for one entry lie in the single bound `weight`
// buffer. expert_offset_words[e] is the u32-word offset of expert e's slot in that buffer,
// indexed by expert id; inside a slot the projection sits at proj_word (gate or down) and,
// for gate_up, the up projection at up_word, each a packed (rows, cols) tensor of row_words
// words per row (Layout.row_bytes(cols) / 4; docs/layouts.md). The expert pager owns the
// table: when it uploads expert e into a GPU cache slot it writes that slot's offset to
// entry e, so the table maps expert id -> slot and nothing else changes. A slot may hold all
// three projections of an expert (bind the same buffer and table to both entries, proj_word
// = 0 / up_word = ff * row_words for gate_up and proj_word = 2 * ff * row_words for down), or
// gate/up and down may live in separate buffers with a table each. An entry must point at
// a resident expert for every id the router can emit before the dispatch.
//
// Work split (decode and prefill alike): each workgroup computes ROWS_PER_WG rows for one
// (token, choice) pair (gate_up) or one token (down), WG / ROWS_PER_WG invocations per row
// striding over the row's chunks, as in matvec_quant.wgsl. Prefill therefore decodes an
// expert's rows once per token routed to it; grouping tokens by expert (a matmat tile per
// expert) is a later optimisation.
//
// Dispatch: (grid_x, ceil(G / grid_x)), grid_x = min(G, 65535), with R = ceil(rows /
// ROWS_PER_WG) and G = R * n_tokens * top_k (gate_up) or R * n_tokens (down); workgroup g =
// wid.y * grid_x + wid.x takes row group g % R of pair / token g / R. WG a power of two.
// Bindings: weight (0, u32 words), expert_offset_words (1, u32 [n_experts]), expert_ids
// (2, u32 [n_tokens, top_k]), expert_weights (3, f32 [n_tokens, top_k]; down only), src (4:
// gate_up x f32 [n_tokens, hidden], down h f32 [n_tokens, top_k, ff]), dst (5: gate_up h,
// down y f32 [n_tokens, hidden]), params (6).

struct Params {
  n_tokens: u32,
  top_k: u32,
  rows: u32,        // output rows per expert: gate_up ff, down hidden
  cols: u32,        // logical row length: gate_up hidden, down ff
  grid_x: u32,      // workgroups along x (see Dispatch)
  row_words: u32,   // Layout.row_bytes(cols) / 4
  plane1: u32,      // word offsets in a row of the layout's 2nd and 3rd planes (else 0)
  plane2: u32,
  proj_word: u32,   // word offset in an expert's slot of W_gate (gate_up) or W_down (down)
  up_word: u32,     // gate_up: word offset in an expert's slot of W_up; down ignores it
  act: u32,         // gate_up: 0 = SiLU, 1 = GELU-tanh; down ignores it
  accumulate: u32,  // down: 1 adds into y, 0 overwrites it; gate_up ignores it
}

const ACT_GELU_TANH: u32 = 1u;

@group(0) @binding(0) var<storage, read> weight: array<u32>;
@group(0) @binding(1) var<storage, read> expert_offset_words: array<u32>;
@group(0) @binding(2) var<storage, read> expert_ids: array<u32>;
@group(0) @binding(3) var<storage, read> expert_weights: array<f32>;
@group(0) @binding(4) var<storage, read> src: array<f32>;
@group(0) @binding(5) var<storage, read_write> dst: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

override WG: u32 = 64;
override ROWS_PER_WG: u32 = 8;  // rows per workgroup (a power of two dividing WG)

#include "dequant.wgsl"
#include "reduce.wgsl"

#include "act.wgsl"

// Sum over one decoded chunk of w[i] * src[src_base + k0 + i], masking past the row's end.
fn chunk_dot(w: ptr<function, array<f32, CHUNK>>, src_base: u32, k0: u32) -> f32 {
  var sum = 0.0;
  let count = min(CHUNK, params.cols - k0);
  for (var i = 0u; i < count; i++) { sum += (*w)[i] * src[src_base + k0 + i]; }
  return sum;
}

fn chunks() -> u32 {
  return (params.cols + CHUNK - 1u) / CHUNK;
}

// This lane's share of (row at word `row_word`) . src[src_base ..]: chunks lane, lane + lanes..
fn lane_dot(row_word: u32, src_base: u32, lane: u32) -> f32 {
  var sum = 0.0;
  for (var c = lane; c < chunks(); c += WG / ROWS_PER_WG) {
    var w = decode_chunk(row_word, c, params.plane1, params.plane2);
    sum += chunk_dot(&w, src_base, c * CHUNK);
  }
  return sum;
}

// Sum of v over the WG / ROWS_PER_WG consecutive invocations that share a row; all get it.
fn row_sum(lid: u32, v: f32) -> f32 {
  let lanes = WG / ROWS_PER_WG;
  red[lid] = v;
  workgroupBarrier();
  for (var stride = lanes / 2u; stride > 0u; stride /= 2u) {
    if (lid % lanes < stride) { red[lid] += red[lid + stride]; }
    workgroupBarrier();
  }
  let total = red[lid - lid % lanes];
  workgroupBarrier();
  return total;
}

fn row_groups() -> u32 {
  return (params.rows + ROWS_PER_WG - 1u) / ROWS_PER_WG;
}

@compute @workgroup_size(WG)
fn gate_up(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let g = wid.y * params.grid_x + wid.x;
  let pair = g / row_groups();
  if (pair >= params.n_tokens * params.top_k) { return; }
  let lanes = WG / ROWS_PER_WG;
  let r = (g % row_groups()) * ROWS_PER_WG + lid / lanes;
  let slot = expert_offset_words[expert_ids[pair]];
  let x_base = (pair / params.top_k) * params.cols;
  var gate = 0.0;
  var up = 0.0;
  if (r < params.rows) {
    gate = lane_dot(slot + params.proj_word + r * params.row_words, x_base, lid % lanes);
    up = lane_dot(slot + params.up_word + r * params.row_words, x_base, lid % lanes);
  }
  gate = row_sum(lid, gate);
  up = row_sum(lid, up);
  if (lid % lanes == 0u && r < params.rows) {
    let a = select(silu(gate), gelu_tanh(gate), params.act == ACT_GELU_TANH);
    dst[pair * params.rows + r] = a * up;
  }
}

@compute @workgroup_size(WG)
fn down(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let g = wid.y * params.grid_x + wid.x;
  let t = g / row_groups();
  if (t >= params.n_tokens) { return; }
  let lanes = WG / ROWS_PER_WG;
  let r = (g % row_groups()) * ROWS_PER_WG + lid / lanes;
  var sum = 0.0;
  if (r < params.rows) {
    for (var j = 0u; j < params.top_k; j++) {
      let pair = t * params.top_k + j;
      let row_word = expert_offset_words[expert_ids[pair]] + params.proj_word + r * params.row_words;
      sum += expert_weights[pair] * lane_dot(row_word, pair * params.cols, lid % lanes);
    }
  }
  let total = row_sum(lid, sum);
  if (lid % lanes == 0u && r < params.rows) {
    let out = t * params.rows + r;
    dst[out] = select(0.0, dst[out], params.accumulate == 1u) + total;
  }
}

// shared_gate (Qwen2-MoE's gated shared expert): dst[i] += sigmoid(gate_logit[t]) * src[i]
// for i < n_tokens * rows, t = i / rows, with gate_logit bound at 3 (expert_weights' slot),
// the shared expert's output at 4 and the routed experts' output at 5.
// Dispatch: (grid_x, ceil(ceil(n_tokens * rows / WG) / grid_x)) workgroups.
@compute @workgroup_size(WG)
fn shared_gate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * params.grid_x + wid.x) * WG + lid;
  if (i >= params.n_tokens * params.rows) { return; }
  dst[i] += src[i] / (1.0 + exp(-expert_weights[i / params.rows]));
}

// ---- Prefill grouped by expert -------------------------------------------------------------
// A chunk of tokens often routes several tokens to one expert; these entries decode each
// expert's weight rows once for all of them instead of once per (token, choice) pair:
//   group:            counting sort of the pairs by expert into `groups` (binding 7):
//                     groups[e] .. groups[e + 1] (e <= n_experts = params.rows) index
//                     order = groups[n_experts + 1 ..], the pairs routed to e in pair order
//   gate_up_grouped:  h as gate_up computes it, one workgroup per (expert, row group)
//   down_grouped:     per pair p of expert e, yp[p, r] = W_down[e][r] . h[p] into dst
//   combine:          y[t, r] = (accumulate ? y[t, r] : 0) + sum_j w[t, j] * yp[t*top_k+j, r]
//                     (src = yp, dst = y): no two workgroups ever write one output
// Dispatch: group (1 workgroup); gate_up_grouped and down_grouped (grid_x, ceil(R * E /
// grid_x)), R = ceil(rows / ROWS_PER_WG), E = n_experts = the table's length, with
// gate_up's and down's params; combine (grid_x, ceil(ceil(n_tokens * rows / WG) / grid_x)),
// rows = hidden. `group` reads n_experts from params.rows.

@group(0) @binding(7) var<storage, read_write> groups: array<u32>;

const GROUP_BATCH: u32 = 16u;  // pairs of one expert accumulated at once, per invocation

var<workgroup> group_span: vec2<u32>;

@compute @workgroup_size(WG)
fn group(@builtin(local_invocation_index) lid: u32) {
  let n_experts = params.rows;
  let pairs = params.n_tokens * params.top_k;
  if (lid == 0u) {
    for (var e = 0u; e <= n_experts; e++) { groups[e] = 0u; }
    for (var p = 0u; p < pairs; p++) { groups[expert_ids[p] + 1u] += 1u; }
    for (var e = 0u; e < n_experts; e++) { groups[e + 1u] += groups[e]; }
  }
  storageBarrier();
  workgroupBarrier();
  for (var e = lid; e < n_experts; e += WG) {
    var at = n_experts + 1u + groups[e];
    for (var p = 0u; p < pairs; p++) {
      if (expert_ids[p] == e) {
        groups[at] = p;
        at++;
      }
    }
  }
}

// The pairs [first, end) of this workgroup's expert, made uniform for the barriers below.
fn expert_pairs(lid: u32, e: u32, n_experts: u32) -> vec2<u32> {
  if (lid == 0u) { group_span = vec2<u32>(groups[e], groups[e + 1u]); }
  return workgroupUniformLoad(&group_span) + vec2<u32>(n_experts + 1u);
}

// Sum over one decoded chunk of w[i] * src[src_base + k0 + i], for up to GROUP_BATCH pairs.
fn batch_dots(
  w: ptr<function, array<f32, CHUNK>>, k0: u32, first: u32, count: u32, per_token: bool,
  sums: ptr<function, array<f32, GROUP_BATCH>>,
) {
  let n = min(CHUNK, params.cols - k0);
  for (var b = 0u; b < count; b++) {
    let pair = groups[first + b];
    let base = select(pair, pair / params.top_k, per_token) * params.cols + k0;
    var s = 0.0;
    for (var i = 0u; i < n; i++) { s += (*w)[i] * src[base + i]; }
    (*sums)[b] += s;
  }
}

@compute @workgroup_size(WG)
fn gate_up_grouped(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n_experts = arrayLength(&expert_offset_words);
  let g = wid.y * params.grid_x + wid.x;
  let e = min(g / row_groups(), n_experts - 1u);
  let span = expert_pairs(lid, e, n_experts);
  if (g >= row_groups() * n_experts) { return; }
  let lanes = WG / ROWS_PER_WG;
  let r = (g % row_groups()) * ROWS_PER_WG + lid / lanes;
  let slot = expert_offset_words[e];
  for (var first = span.x; first < span.y; first += GROUP_BATCH) {
    let count = min(GROUP_BATCH, span.y - first);
    var gate = array<f32, GROUP_BATCH>();
    var up = array<f32, GROUP_BATCH>();
    if (r < params.rows) {
      for (var c = lid % lanes; c < chunks(); c += lanes) {
        var w_gate = decode_chunk(slot + params.proj_word + r * params.row_words, c, params.plane1, params.plane2);
        batch_dots(&w_gate, c * CHUNK, first, count, true, &gate);
        var w_up = decode_chunk(slot + params.up_word + r * params.row_words, c, params.plane1, params.plane2);
        batch_dots(&w_up, c * CHUNK, first, count, true, &up);
      }
    }
    for (var b = 0u; b < count; b++) {
      let gs = row_sum(lid, gate[b]);
      let us = row_sum(lid, up[b]);
      if (lid % lanes == 0u && r < params.rows) {
        let a = select(silu(gs), gelu_tanh(gs), params.act == ACT_GELU_TANH);
        dst[groups[first + b] * params.rows + r] = a * us;
      }
    }
  }
}

@compute @workgroup_size(WG)
fn down_grouped(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let n_experts = arrayLength(&expert_offset_words);
  let g = wid.y * params.grid_x + wid.x;
  let e = min(g / row_groups(), n_experts - 1u);
  let span = expert_pairs(lid, e, n_experts);
  if (g >= row_groups() * n_experts) { return; }
  let lanes = WG / ROWS_PER_WG;
  let r = (g % row_groups()) * ROWS_PER_WG + lid / lanes;
  let row_word = expert_offset_words[e] + params.proj_word + r * params.row_words;
  for (var first = span.x; first < span.y; first += GROUP_BATCH) {
    let count = min(GROUP_BATCH, span.y - first);
    var sums = array<f32, GROUP_BATCH>();
    if (r < params.rows) {
      for (var c = lid % lanes; c < chunks(); c += lanes) {
        var w = decode_chunk(row_word, c, params.plane1, params.plane2);
        batch_dots(&w, c * CHUNK, first, count, false, &sums);
      }
    }
    for (var b = 0u; b < count; b++) {
      let total = row_sum(lid, sums[b]);
      if (lid % lanes == 0u && r < params.rows) { dst[groups[first + b] * params.rows + r] = total; }
    }
  }
}

@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * params.grid_x + wid.x) * WG + lid;
  if (i >= params.n_tokens * params.rows) { return; }
  let t = i / params.rows;
  let r = i % params.rows;
  var sum = select(0.0, dst[i], params.accumulate == 1u);
  for (var j = 0u; j < params.top_k; j++) {
    let pair = t * params.top_k + j;
    sum += expert_weights[pair] * src[pair * params.rows + r];
  }
  dst[i] = sum;
}
