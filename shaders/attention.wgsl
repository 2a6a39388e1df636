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
// Attention: for query token t at pos = positions[t] and head h (kv head h / (n_heads /
// n_kv_heads), n_heads a multiple of n_kv_heads), over cache positions j in [lo, pos], with
// lo = max(0, pos + 1 - window) when window > 0 (Gemma's local layers), else 0:
//   s_j = scale * dot(q, k_j);  if softcap > 0: s_j = softcap * tanh(s_j / softcap)
//   out = sum_j softmax(s)_j v_j
// The cache must already hold positions 0..pos (run kv_write for the new tokens first).
// Two dispatches, split-K (flash-decoding) for decode and prefill alike: `split` gives each
// range of split_len keys of a query its own workgroup, `combine` merges the ranges (see the
// entries below). In a workgroup keys are taken WG at a time (one per invocation) with an
// online softmax (running max and sum), so workgroup memory holds q, the output accumulator
// and one tile of probabilities: head_dim <= MAX_HEAD_DIM and a multiple of 4 (q, k and v
// are read as vec4s), any context length.
// With rope_dim > 0 the query is first RMS-normed (q_normed: by q_norm, Gemma 3's q norm) and
// rotated here (rope.wgsl's rotation with inv_freq): the q heads need no kernel of their own.
// split's bindings: q (0), k_cache (1), v_cache (2), positions (3), partials (4), params (5),
// inv_freq (6), q_norm (7; any read-only buffer when unused).
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
  split_len: u32, // split/combine: keys per split
  n_splits: u32,  // split/combine: splits per query (ceil(max_ctx / split_len))
  rope_dim: u32,  // split: rotated dims of q (0: q comes rotated)
  interleaved: u32,
  q_normed: u32,  // split with rope_dim > 0: RMSNorm q by q_norm (+ norm_offset) first
  eps: f32,
  norm_offset: f32,
  _pad0: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k_cache: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v_cache: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> positions: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;
@group(0) @binding(6) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(7) var<storage, read> q_norm: array<f32>;

@group(0) @binding(0) var<storage, read> k_new: array<f32>;
@group(0) @binding(1) var<storage, read> v_new: array<f32>;
@group(0) @binding(2) var<storage, read> write_positions: array<u32>;
@group(0) @binding(3) var<storage, read_write> k_dst: array<f32>;
@group(0) @binding(4) var<storage, read_write> v_dst: array<f32>;

override WG: u32 = 64;
const MAX_HEAD_DIM: u32 = 512u;
const NO_SCORE: f32 = -3.0e38;

#include "reduce.wgsl"
#include "rotary.wgsl"

var<workgroup> q_scaled: array<vec4<f32>, MAX_HEAD_DIM / 4u>;
var<workgroup> acc: array<vec4<f32>, MAX_HEAD_DIM / 4u>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> query_pos: u32;

// vec4 loads in flight per invocation: the inner loops below have this constant trip count
// so compilers unroll them and issue UNROLL independent cache reads before the first use
// (a plain loop waits for each read in turn: ~head_dim round trips to memory per key).
const UNROLL: u32 = 8u;

// Scaled q . k for the key whose vec4s start at k_base4, soft-capped.
fn score(k_base4: u32) -> f32 {
  var dots = vec4<f32>();
  let n4 = params.head_dim / 4u;
  var d = 0u;
  for (; d + UNROLL <= n4; d += UNROLL) {
    for (var u = 0u; u < UNROLL; u++) { dots += q_scaled[d + u] * k_cache[k_base4 + d + u]; }
  }
  for (; d < n4; d++) { dots += q_scaled[d] * k_cache[k_base4 + d]; }
  let dot = dots.x + dots.y + dots.z + dots.w;
  if (params.softcap > 0.0) {
    return params.softcap * tanh(clamp(dot / params.softcap, -10.0, 10.0));
  }
  return dot;
}

// Element d of the query as attention uses it (normed and rotated when rope_dim > 0), from
// the raw query staged in acc; `scale` is the RMSNorm's 1 / rms.
fn query_at(d: u32, pos: u32, scale: f32) -> f32 {
  var value = acc[d / 4u][d % 4u] * scale;
  if (params.q_normed != 0u) { value *= q_norm[d] + params.norm_offset; }
  return value;
}

fn rotated_query(d: u32, pos: u32, scale: f32) -> f32 {
  if (d >= params.rope_dim) { return query_at(d, pos, scale); }
  let i = pair_of(d, params.rope_dim, params.interleaved != 0u);
  let dims = pair_dims(i, params.rope_dim, params.interleaved != 0u);
  let pair = vec2<f32>(query_at(dims.x, pos, scale), query_at(dims.y, pos, scale));
  let r = rotate(pair, cos_sin(f32(pos) * inv_freq[i]));
  return select(r.y, r.x, d == dims.x);
}

// Loads query (t, head) into q_scaled (normed, rotated and scaled), clears acc; returns the
// query's position.
fn load_query(q_base: u32, t: u32, lid: u32) -> u32 {
  if (lid == 0u) { query_pos = positions[t]; }
  var squares = 0.0;
  for (var d = lid; d < params.head_dim / 4u; d += WG) {
    let at = q_base + 4u * d;
    let value = vec4<f32>(q[at], q[at + 1u], q[at + 2u], q[at + 3u]);
    acc[d] = value;
    squares += dot(value, value);
  }
  let pos = workgroupUniformLoad(&query_pos);  // also the barrier publishing acc
  if (params.rope_dim == 0u) {
    for (var d = lid; d < params.head_dim / 4u; d += WG) {
      q_scaled[d] = acc[d] * params.scale;
      acc[d] = vec4<f32>();
    }
    workgroupBarrier();
    return pos;
  }
  var scale = 1.0;
  if (params.q_normed != 0u) {
    scale = inverseSqrt(wg_sum(lid, squares) / f32(params.head_dim) + params.eps);
  }
  for (var d = lid; d < params.head_dim; d += WG) {
    q_scaled[d / 4u][d % 4u] = rotated_query(d, pos, scale) * params.scale;
  }
  workgroupBarrier();
  for (var d = lid; d < params.head_dim / 4u; d += WG) { acc[d] = vec4<f32>(); }
  workgroupBarrier();
  return pos;
}

// The first key a query at `pos` may see (sliding window), else 0.
fn first_key(pos: u32) -> u32 {
  if (params.window > 0u && pos + 1u > params.window) { return pos + 1u - params.window; }
  return 0u;
}

// Online softmax over keys [first, end) of kv head rows `kv_rows`: accumulates the
// unnormalised sum of p_j v_j into acc and returns (max score, sum of p_j).
fn attend(lid: u32, kv_rows: u32, first: u32, end: u32) -> vec2<f32> {
  let hd4 = params.head_dim / 4u;
  var running_max = NO_SCORE;
  var running_sum = 0.0;
  for (var start = first; start < end; start += WG) {
    let j = start + lid;
    let valid = j < end;
    var s = NO_SCORE;
    if (valid) { s = score((kv_rows + j) * hd4); }
    let new_max = max(running_max, wg_max(lid, s));
    let p = select(0.0, exp(s - new_max), valid);
    let rescale = exp(running_max - new_max);
    running_sum = running_sum * rescale + wg_sum(lid, p);
    running_max = new_max;
    probs[lid] = p;
    workgroupBarrier();
    let keys = min(WG, end - start);
    for (var d = lid; d < hd4; d += WG) {
      var o = acc[d] * rescale;
      let v_base = (kv_rows + start) * hd4 + d;
      var i = 0u;
      for (; i + UNROLL <= keys; i += UNROLL) {
        for (var u = 0u; u < UNROLL; u++) { o += probs[i + u] * v_cache[v_base + (i + u) * hd4]; }
      }
      for (; i < keys; i++) { o += probs[i] * v_cache[v_base + i * hd4]; }
      acc[d] = o;
    }
    workgroupBarrier();
  }
  return vec2<f32>(running_max, running_sum);
}

fn kv_rows_of(head: u32) -> u32 {
  return (head / (params.n_heads / params.n_kv_heads)) * params.max_ctx;
}

// split: one workgroup per (head, token, split s) attends to keys [first + s * split_len,
// first + (s + 1) * split_len) ∩ [first, pos] and writes its partial result — acc (head_dim
// values), then its max score and its sum — to `out` viewed as partials
// [n_tokens, n_heads, n_splits, head_dim + 2]. Splits past the query's keys write an empty
// partial (max NO_SCORE, sum 0). Many workgroups share one query's keys, so decode at long
// contexts keeps the GPU busy (flash-decoding). Dispatch: (n_heads, n_tokens, n_splits).
@compute @workgroup_size(WG)
fn split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let head = wid.x;
  let t = wid.y;
  let s = wid.z;
  if (head >= params.n_heads || t >= params.n_tokens || s >= params.n_splits) { return; }
  let hd = params.head_dim;
  let pos = load_query((t * params.n_heads + head) * hd, t, lid);
  let begin = min(first_key(pos) + s * params.split_len, pos + 1u);
  let end = min(begin + params.split_len, pos + 1u);
  let stats = attend(lid, kv_rows_of(head), begin, end);
  let base = ((t * params.n_heads + head) * params.n_splits + s) * (hd + 2u);
  for (var d = lid; d < hd; d += WG) { out[base + d] = acc[d / 4u][d % 4u]; }
  if (lid == 0u) {
    out[base + hd] = stats.x;
    out[base + hd + 1u] = stats.y;
  }
}

@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> combined: array<f32>;

// combine: merges the n_splits partials of each (head, token) into its output row:
// out = sum_s acc_s exp(max_s - m) / sum_s sum_s exp(max_s - m), m = max_s max_s.
// Bindings: partials (0), out (1), params (5). Dispatch: (n_heads, n_tokens).
@compute @workgroup_size(WG)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let head = wid.x;
  let t = wid.y;
  if (head >= params.n_heads || t >= params.n_tokens) { return; }
  let hd = params.head_dim;
  let stride = hd + 2u;
  let row = (t * params.n_heads + head) * params.n_splits;
  // Invocations take splits lid, lid + WG, ... for the max and the sum.
  var m = NO_SCORE;
  for (var s = lid; s < params.n_splits; s += WG) { m = max(m, partials[(row + s) * stride + hd]); }
  m = wg_max(lid, m);
  var total = 0.0;
  for (var s = lid; s < params.n_splits; s += WG) {
    let at = (row + s) * stride + hd;
    total += partials[at + 1u] * exp(partials[at] - m);
  }
  let sum = wg_sum(lid, total);
  // WG splits at a time: their weights exp(max_s - m) / sum in probs, then each invocation
  // adds them into its dims of acc, UNROLL partial rows in flight.
  for (var c = 0u; c < params.n_splits; c += WG) {
    var weight = 0.0;
    if (c + lid < params.n_splits) {
      weight = exp(partials[(row + c + lid) * stride + hd] - m) / sum;
    }
    probs[lid] = weight;
    workgroupBarrier();
    let count = min(WG, params.n_splits - c);
    for (var d = lid; d < hd; d += WG) {
      let base = (row + c) * stride + d;
      var o = select(0.0, acc[d / 4u][d % 4u], c > 0u);
      var i = 0u;
      for (; i + UNROLL <= count; i += UNROLL) {
        for (var u = 0u; u < UNROLL; u++) { o += probs[i + u] * partials[base + (i + u) * stride]; }
      }
      for (; i < count; i++) { o += probs[i] * partials[base + i * stride]; }
      acc[d / 4u][d % 4u] = o;
    }
    workgroupBarrier();
  }
  for (var d = lid; d < hd; d += WG) {
    combined[(t * params.n_heads + head) * hd + d] = acc[d / 4u][d % 4u];
  }
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
