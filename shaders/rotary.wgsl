// The rotation of RoPE and its pairing of dims, shared by rope.wgsl, attention.wgsl (which
// rotates queries) and matvec_quant.wgsl (which rotates k in a projection's epilogue).

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

// The two dims that RoPE's pair i rotates together: (i, i + rot_dim / 2) in the rotate-half
// (NeoX) style, (2i, 2i + 1) interleaved (GPT-J).
fn pair_dims(i: u32, rot_dim: u32, interleaved: bool) -> vec2<u32> {
  if (interleaved) { return vec2<u32>(2u * i, 2u * i + 1u); }
  return vec2<u32>(i, i + rot_dim / 2u);
}

// The pair that dim d (< rot_dim) belongs to.
fn pair_of(d: u32, rot_dim: u32, interleaved: bool) -> u32 {
  return select(d % (rot_dim / 2u), d / 2u, interleaved);
}

fn rotate(x: vec2<f32>, cs: vec2<f32>) -> vec2<f32> {
  return vec2<f32>(x.x * cs.x - x.y * cs.y, x.y * cs.x + x.x * cs.y);
}
