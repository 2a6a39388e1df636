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

// (cos, sin) of an f32 angle to ~2e-7 absolute for |angle| < 8e5 on every GPU: WGSL only
// bounds sin/cos error (2^-11) on [-pi, pi] and SwiftShader really is that coarse, so we
// reduce by quarter turns (Cody-Waite: pi/2 = C1 + C2 + C3 + C4 with C1, C2 of 5 bits, so
// every product with k < 2^19 and every subtraction but the last two is exact), then use
// cephes' sinf/cosf polynomials on [-pi/4, pi/4]. Needs IEEE f32 + and * (no fast-math
// reassociation; fusing into fma is harmless).
fn cos_sin(angle: f32) -> vec2<f32> {
  let k = round(angle * 0.63661977236758134);
  let r = (((angle - k * 1.5625) - k * 0.00830078125) - k * -4.454454938240815e-6)
          - k * -1.6513995574653217e-13;
  let z = r * r;
  let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
  let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z
          - 0.5 * z + 1.0;
  switch (i32(k) & 3) {
    case 0: { return vec2<f32>(c, s); }
    case 1: { return vec2<f32>(-s, c); }
    case 2: { return vec2<f32>(-c, -s); }
    default: { return vec2<f32>(s, -c); }
  }
}

fn rotate(x: vec2<f32>, cs: vec2<f32>) -> vec2<f32> {
  return vec2<f32>(x.x * cs.x - x.y * cs.y, x.y * cs.x + x.x * cs.y);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.y;
  let half = params.rot_dim / 2u;
  let head = gid.x / half;
  let i = gid.x % half;
  if (t >= params.n_tokens || head >= params.n_heads + params.n_kv_heads) { return; }
  let cs = cos_sin(f32(positions[t]) * inv_freq[i]);
  var a = i;
  var b = i + half;
  if (params.interleaved != 0u) {
    a = 2u * i;
    b = a + 1u;
  }
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
