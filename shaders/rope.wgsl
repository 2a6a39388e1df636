// Rotary position embedding, in place on q and k for a batch of tokens.
//
// For token t at position pos = positions[t] and rotated pair i < rot_dim / 2 of every head:
//   angle = f32(pos) * inv_freq[i]                    (the f32 product transformers computes)
//   (x_a, x_b) <- (x_a cos - x_b sin, x_b cos + x_a sin)
// with (a, b) = (i, i + rot_dim / 2) for rotate-half pairing (NeoX, HF Llama/Qwen/Gemma) or
// (2i, 2i + 1) for interleaved pairing (GPT-J). Dims >= rot_dim are left untouched
// (partial rotary). inv_freq comes from doppler.model.rope.inv_freq, so rope scaling and
// per-layer bases cost nothing here: bind another inv_freq buffer.
//
// Layouts (f32, row-major): q (n_tokens, n_heads, head_dim), k (n_tokens, n_kv_heads, head_dim),
// positions u32 (n_tokens), inv_freq f32 (rot_dim / 2).
// Dispatch: (ceil((n_heads + n_kv_heads) * rot_dim / 2 / WG), n_tokens); one invocation per
// (token, head, pair), q heads first, then k heads.

struct Params {
  n_tokens: u32,
  n_heads: u32,
  n_kv_heads: u32,
  head_dim: u32,
  rot_dim: u32,      // rotated dims per head: even, <= head_dim
  interleaved: u32,  // 0: rotate-half pairs (i, i + rot_dim/2); 1: pairs (2i, 2i + 1)
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> positions: array<u32>;
@group(0) @binding(1) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(2) var<storage, read_write> q: array<f32>;
@group(0) @binding(3) var<storage, read_write> k: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

override WG: u32 = 64;

#include "rotary.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.y;
  let half = params.rot_dim / 2u;
  let head = gid.x / half;
  let i = gid.x % half;
  if (t >= params.n_tokens || head >= params.n_heads + params.n_kv_heads) { return; }
  let cs = cos_sin(f32(positions[t]) * inv_freq[i]);
  let dims = pair_dims(i, params.rot_dim, params.interleaved != 0u);
  let a = dims.x;
  let b = dims.y;
  if (head < params.n_heads) {
    let base = (t * params.n_heads + head) * params.head_dim;
    let r = rotate(vec2<f32>(q[base + a], q[base + b]), cs);
    q[base + a] = r.x;
    q[base + b] = r.y;
  } else {
    let base = (t * params.n_kv_heads + head - params.n_heads) * params.head_dim;
    let r = rotate(vec2<f32>(k[base + a], k[base + b]), cs);
    k[base + a] = r.x;
    k[base + b] = r.y;
  }
}

// rope_store: the same rotation of the k heads, after an optional per-head RMSNorm (Gemma 3's
// k norm), stored straight into the KV cache (attention.wgsl's layout, f32 [n_kv_heads,
// max_ctx, head_dim]) with their v heads: norm, rotation and kv_write in one dispatch (the
// queries are normed and rotated by attention.wgsl itself). Workgroup (h, t) rotates kv head
// h of token t into k_cache[h, positions[t], :] and copies v[t, h, :] to v_cache[h,
// positions[t], :] (positions >= max_ctx are skipped, as kv_write does). With `normed`, the
// head is first scaled by 1 / sqrt(mean(x^2) + eps) and by (norm[d] + norm_offset).
// Bindings: positions (0), inv_freq (1), k (3), v (4), k_cache (5), v_cache (6), norm (7),
// params (8). Dispatch: (n_kv_heads, n_tokens); head_dim <= MAX_HEAD_DIM.

struct StoreParams {
  n_tokens: u32,
  n_kv_heads: u32,
  head_dim: u32,
  rot_dim: u32,
  interleaved: u32,
  max_ctx: u32,
  normed: u32,     // 1: RMSNorm each head with `norm` first
  eps: f32,
  norm_offset: f32,
}

@group(0) @binding(3) var<storage, read> k_in: array<f32>;
@group(0) @binding(4) var<storage, read> v_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(6) var<storage, read_write> v_cache: array<f32>;
@group(0) @binding(7) var<storage, read> norm: array<f32>;
@group(0) @binding(8) var<uniform> store: StoreParams;

const MAX_HEAD_DIM: u32 = 512u;
var<workgroup> head_vals: array<f32, MAX_HEAD_DIM>;

#include "reduce.wgsl"

// Element d of the head after the norm (scale is 1 / rms, or 1 without the norm).
fn normed_at(d: u32, scale: f32) -> f32 {
  if (store.normed == 0u) { return head_vals[d]; }
  return head_vals[d] * scale * (norm[d] + store.norm_offset);
}

@compute @workgroup_size(WG)
fn rope_store(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wid.y;
  let kv = wid.x;
  if (t >= store.n_tokens || kv >= store.n_kv_heads) { return; }
  let hd = store.head_dim;
  let base = (t * store.n_kv_heads + kv) * hd;
  var squares = 0.0;
  for (var d = lid; d < hd; d += WG) {
    let value = k_in[base + d];
    head_vals[d] = value;
    squares += value * value;
  }
  var scale = 1.0;
  if (store.normed != 0u) { scale = inverseSqrt(wg_sum(lid, squares) / f32(hd) + store.eps); }
  workgroupBarrier();
  let pos = positions[t];
  let cached = (kv * store.max_ctx + pos) * hd;
  for (var d = lid; d < hd; d += WG) {
    var value = normed_at(d, scale);
    if (d < store.rot_dim) {
      let i = pair_of(d, store.rot_dim, store.interleaved != 0u);
      let dims = pair_dims(i, store.rot_dim, store.interleaved != 0u);
      let a = dims.x;
      let r = rotate(vec2<f32>(normed_at(a, scale), normed_at(dims.y, scale)),
                     cos_sin(f32(pos) * inv_freq[i]));
      value = select(r.y, r.x, d == a);
    }
    if (pos < store.max_ctx) {
      k_cache[cached + d] = value;
      v_cache[cached + d] = v_in[base + d];
    }
  }
}
