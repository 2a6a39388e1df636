// Scaled dot-product attention over the KV cache, for decode (n_tokens = 1) and prefill
// (n_tokens > 1, causal), with grouped-query heads, an optional sliding window and optional
// logit soft-capping; and `kv_write`, which stores new k/v rows into the cache.
//
// KV cache layout (k_cache and v_cache alike): f32 [n_kv_heads, max_ctx, head_dim], row-major:
// position p of kv head h starts at element (h * max_ctx + p) * head_dim.
// q and out: f32 [n_tokens, n_heads, head_dim]; k_new, v_new: f32 [n_tokens, n_kv_heads,
// head_dim]; positions: u32 [n_tokens], the absolute position of each token (the same buffer
// rope.wgsl reads).
//
// main: for query token t at pos = positions[t] and head h (kv head h / (n_heads / n_kv_heads),
// n_heads a multiple of n_kv_heads), attends to cache positions j in [lo, pos], with
// lo = max(0, pos + 1 - window) when window > 0 (Gemma's local layers), else 0:
//   s_j = scale * dot(q, k_j);  if softcap > 0: s_j = softcap * tanh(s_j / softcap)
//   out = sum_j softmax(s)_j v_j
// The cache must already hold positions 0..pos (run kv_write for the new tokens first).
// One workgroup per (head, token); keys are taken WG at a time (one per invocation) with an
// online softmax (running max and sum), so workgroup memory holds q, the output accumulator
// and one tile of probabilities: head_dim <= MAX_HEAD_DIM, any context length.
// Bindings: q (0), k_cache (1), v_cache (2), positions (3), out (4), params (5).
// Dispatch: (n_heads, n_tokens).
//
// kv_write: k_cache[h, positions[t], :] = k_new[t, h, :], likewise v; positions >= max_ctx are
// skipped (the host rejects prompts that do not fit).
// Bindings: k_new (0), v_new (1), positions (2), k_cache (3), v_cache (4), params (5).
// Dispatch: (ceil(n_kv_heads * head_dim / WG), n_tokens).

struct Params {
  n_tokens: u32,
  n_heads: u32,
  n_kv_heads: u32,
  head_dim: u32,
  max_ctx: u32,   // positions per kv head in the cache
  window: u32,    // sliding window: attend to the last `window` positions; 0 = unlimited
  scale: f32,     // 1/sqrt(head_dim), or query_pre_attn_scalar^-0.5 (Gemma)
  softcap: f32,   // attention logit soft-capping (Gemma 2); 0 = off
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k_cache: array<f32>;
@group(0) @binding(2) var<storage, read> v_cache: array<f32>;
@group(0) @binding(3) var<storage, read> positions: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

@group(0) @binding(0) var<storage, read> k_new: array<f32>;
@group(0) @binding(1) var<storage, read> v_new: array<f32>;
@group(0) @binding(2) var<storage, read> write_positions: array<u32>;
@group(0) @binding(3) var<storage, read_write> k_dst: array<f32>;
@group(0) @binding(4) var<storage, read_write> v_dst: array<f32>;

override WG: u32 = 64;
const MAX_HEAD_DIM: u32 = 512u;
const NO_SCORE: f32 = -3.0e38;

#include "reduce.wgsl"

var<workgroup> q_scaled: array<f32, MAX_HEAD_DIM>;
var<workgroup> acc: array<f32, MAX_HEAD_DIM>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> query_pos: u32;

fn score(k_base: u32) -> f32 {
  var dot = 0.0;
  for (var d = 0u; d < params.head_dim; d++) { dot += q_scaled[d] * k_cache[k_base + d]; }
  if (params.softcap > 0.0) {
    return params.softcap * tanh(clamp(dot / params.softcap, -10.0, 10.0));
  }
  return dot;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let head = wid.x;
  let t = wid.y;
  if (head >= params.n_heads || t >= params.n_tokens) { return; }
  let hd = params.head_dim;
  let kv_rows = (head / (params.n_heads / params.n_kv_heads)) * params.max_ctx;
  let q_base = (t * params.n_heads + head) * hd;
  for (var d = lid; d < hd; d += WG) {
    q_scaled[d] = q[q_base + d] * params.scale;
    acc[d] = 0.0;
  }
  if (lid == 0u) { query_pos = positions[t]; }
  let pos = workgroupUniformLoad(&query_pos);  // also the barrier publishing q_scaled
  var lo = 0u;
  if (params.window > 0u && pos + 1u > params.window) { lo = pos + 1u - params.window; }
  var running_max = NO_SCORE;
  var running_sum = 0.0;
  for (var start = lo; start <= pos; start += WG) {
    let j = start + lid;
    let valid = j <= pos;
    var s = NO_SCORE;
    if (valid) { s = score((kv_rows + j) * hd); }
    let new_max = max(running_max, wg_max(lid, s));
    let p = select(0.0, exp(s - new_max), valid);
    let rescale = exp(running_max - new_max);
    running_sum = running_sum * rescale + wg_sum(lid, p);
    running_max = new_max;
    probs[lid] = p;
    workgroupBarrier();
    let keys = min(WG, pos + 1u - start);
    for (var d = lid; d < hd; d += WG) {
      var o = acc[d] * rescale;
      for (var i = 0u; i < keys; i++) { o += probs[i] * v_cache[(kv_rows + start + i) * hd + d]; }
      acc[d] = o;
    }
    workgroupBarrier();
  }
  for (var d = lid; d < hd; d += WG) { out[q_base + d] = acc[d] / running_sum; }
}

@compute @workgroup_size(WG)
fn kv_write(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.y;
  let row = params.n_kv_heads * params.head_dim;
  if (t >= params.n_tokens || gid.x >= row) { return; }
  let pos = write_positions[t];
  if (pos >= params.max_ctx) { return; }
  let h = gid.x / params.head_dim;
  let dst = (h * params.max_ctx + pos) * params.head_dim + gid.x % params.head_dim;
  k_dst[dst] = k_new[t * row + gid.x];
  v_dst[dst] = v_new[t * row + gid.x];
}
