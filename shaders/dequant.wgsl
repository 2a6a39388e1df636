// Decoding of DOPPLER's on-GPU weight layouts, one chunk of a row at a time.
// Byte-level spec: docs/layouts.md and py/doppler/format/layouts.py; the Python twin of this
// file is doppler.convert.pack.dequantize (the oracle the tests compare against).
//
// The includer defines exactly one flag LAYOUT_<NAME> (LAYOUT_F32, LAYOUT_F16, LAYOUT_BF16,
// LAYOUT_Q8_0, LAYOUT_Q4_0, LAYOUT_Q4_1, LAYOUT_Q5_0, LAYOUT_Q5_1, LAYOUT_Q4_K, LAYOUT_Q5_K,
// LAYOUT_Q6_K) and declares the packed tensor as `weight: array<u32>`.
//
// Provides `CHUNK` (elements per chunk: 4 for f32, 8 for f16/bf16, 32 otherwise: one block,
// or one 32-weight sub-block of a 256-weight k-quant super-block) and
//   decode_chunk(row_word, c, plane1, plane2) -> array<f32, CHUNK>
// the f32 values of elements [c * CHUNK, (c + 1) * CHUNK) of the row that starts at word
// `row_word` of `weight`. plane1/plane2 are the word offsets, within a row, of the layout's
// second and third planes (Layout.plane_offsets / 4; the first plane is at 0; pass 0 when the
// layout has fewer planes). Float rows are zero-padded to 16 bytes, i.e. to whole chunks; the
// caller masks elements past the logical row length.
//
// and, for the matrix-vector kernel, `UNIT` (elements per unit, a multiple of 4) and
//   decode_unit(row_word, u, plane1, plane2) -> array<vec4<f32>, UNIT / 4>
//   unit_x4(u, k) -> u32
// unit u of the row decoded as vec4s, vec4 k holding elements 4 * unit_x4(u, k) + (0..3).
// The 32-weight blocks take one word of quant bits per unit (8 elements; for nibbles the runs
// 4i.. and 16 + 4i.. of the block), so neighbouring invocations read neighbouring words; the
// other layouts take one chunk per unit.

fn byte_at(word: u32, lane: u32) -> u32 {
  return (word >> (8u * lane)) & 0xFFu;
}

fn int8_at(word: u32, lane: u32) -> f32 {
  return f32(extractBits(bitcast<i32>(word), 8u * lane, 8u));
}

// f16 number `b` of a plane of packed pairs starting at word `plane_word`.
fn half_at(plane_word: u32, b: u32) -> f32 {
  let pair = unpack2x16float(weight[plane_word + (b >> 1u)]);
  return select(pair.x, pair.y, (b & 1u) == 1u);
}

// The 32 unsigned nibbles of a legacy block: byte j holds element j (low) and j + 16 (high).
fn block_nibbles(qs_word: u32) -> array<f32, 32> {
  var q: array<f32, 32>;
  for (var i = 0u; i < 4u; i++) {
    let word = weight[qs_word + i];
    for (var lane = 0u; lane < 4u; lane++) {
      let b = byte_at(word, lane);
      q[4u * i + lane] = f32(b & 15u);
      q[4u * i + lane + 16u] = f32(b >> 4u);
    }
  }
  return q;
}

// (d * scale_j, dmin * min_j) of sub-block j of a Q4_K/Q5_K super-block starting at `blk`:
// word 0 holds (d, dmin) as f16, words 1..3 the twelve bytes of packed 6-bit scales and mins.
fn kquant_scale_min(blk: u32, j: u32) -> vec2<f32> {
  let y = weight[blk + 1u];
  let z = weight[blk + 2u];
  var sc: u32;
  var mn: u32;
  if (j < 4u) {
    sc = byte_at(y, j) & 63u;
    mn = byte_at(z, j) & 63u;
  } else {
    let w = weight[blk + 3u];
    let l = j - 4u;
    sc = (byte_at(w, l) & 15u) | ((byte_at(y, l) >> 6u) << 4u);
    mn = (byte_at(w, l) >> 4u) | ((byte_at(z, l) >> 6u) << 4u);
  }
  let d = unpack2x16float(weight[blk]);
  return vec2<f32>(d.x * f32(sc), d.y * f32(mn));
}

// The 8 nibbles of quant word i of a 32-block: (elements 4i + 0..3, elements 16 + 4i + 0..3).
fn nibble_unit(word: u32) -> array<vec4<f32>, 2> {
  let bytes = vec4<u32>(word, word >> 8u, word >> 16u, word >> 24u);
  return array<vec4<f32>, 2>(vec4<f32>(bytes & vec4<u32>(15u)),
                             vec4<f32>((bytes >> vec4<u32>(4u)) & vec4<u32>(15u)));
}

fn nibble_x4(u: u32, k: u32) -> u32 {
  return 8u * (u / 4u) + u % 4u + 4u * k;
}

// Bit e of qh for the 8 elements of nibble unit u (the 5th bit of Q5 weights), times 16.
fn high_bits(qh: u32, u: u32) -> array<vec4<f32>, 2> {
  let at = vec4<u32>(0u, 1u, 2u, 3u) + 4u * (u % 4u);
  return array<vec4<f32>, 2>(vec4<f32>(((vec4<u32>(qh) >> at) & vec4<u32>(1u)) << vec4<u32>(4u)),
                             vec4<f32>(((vec4<u32>(qh) >> (at + 16u)) & vec4<u32>(1u)) << vec4<u32>(4u)));
}

// A decoded chunk as vec4s: the unit of the layouts whose unit is a chunk.
fn chunk_unit(row_word: u32, u: u32, plane1: u32, plane2: u32) -> array<vec4<f32>, CHUNK / 4u> {
  let w = decode_chunk(row_word, u, plane1, plane2);
  var out: array<vec4<f32>, CHUNK / 4u>;
  for (var k = 0u; k < CHUNK / 4u; k++) {
    out[k] = vec4<f32>(w[4u * k], w[4u * k + 1u], w[4u * k + 2u], w[4u * k + 3u]);
  }
  return out;
}

fn chunk_x4(u: u32, k: u32) -> u32 {
  return u * (CHUNK / 4u) + k;
}

#if LAYOUT_F32
const CHUNK: u32 = 4u;
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  let at = row_word + 4u * c;
  return array<f32, CHUNK>(bitcast<f32>(weight[at]), bitcast<f32>(weight[at + 1u]),
                           bitcast<f32>(weight[at + 2u]), bitcast<f32>(weight[at + 3u]));
}
const UNIT: u32 = CHUNK;
fn decode_unit(row_word: u32, u: u32, plane1: u32, plane2: u32) -> array<vec4<f32>, UNIT / 4u> {
  return chunk_unit(row_word, u, plane1, plane2);
}
fn unit_x4(u: u32, k: u32) -> u32 { return chunk_x4(u, k); }
#endif

#if LAYOUT_F16
const CHUNK: u32 = 8u;
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  var out: array<f32, CHUNK>;
  for (var i = 0u; i < 4u; i++) {
    let pair = unpack2x16float(weight[row_word + 4u * c + i]);
    out[2u * i] = pair.x;
    out[2u * i + 1u] = pair.y;
  }
  return out;
}
const UNIT: u32 = CHUNK;
fn decode_unit(row_word: u32, u: u32, plane1: u32, plane2: u32) -> array<vec4<f32>, UNIT / 4u> {
  return chunk_unit(row_word, u, plane1, plane2);
}
fn unit_x4(u: u32, k: u32) -> u32 { return chunk_x4(u, k); }
#endif

#if LAYOUT_BF16
const CHUNK: u32 = 8u;
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  var out: array<f32, CHUNK>;
  for (var i = 0u; i < 4u; i++) {
    let word = weight[row_word + 4u * c + i];
    out[2u * i] = bitcast<f32>(word << 16u);
    out[2u * i + 1u] = bitcast<f32>(word & 0xFFFF0000u);
  }
  return out;
}
const UNIT: u32 = CHUNK;
fn decode_unit(row_word: u32, u: u32, plane1: u32, plane2: u32) -> array<vec4<f32>, UNIT / 4u> {
  return chunk_unit(row_word, u, plane1, plane2);
}
fn unit_x4(u: u32, k: u32) -> u32 { return chunk_x4(u, k); }
#endif

#if LAYOUT_Q8_0
const CHUNK: u32 = 32u;
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  let d = half_at(row_word + plane1, c);
  var out: array<f32, CHUNK>;
  for (var i = 0u; i < 8u; i++) {
    let word = weight[row_word + 8u * c + i];
    for (var lane = 0u; lane < 4u; lane++) {
      out[4u * i + lane] = d * int8_at(word, lane);
    }
  }
  return out;
}
const UNIT: u32 = 8u;
// Two words (8 signed bytes) per unit.
fn decode_unit(row_word: u32, u: u32, plane1: u32, plane2: u32) -> array<vec4<f32>, 2> {
  let d = half_at(row_word + plane1, u / 4u);
  let shifts = vec4<u32>(24u, 16u, 8u, 0u);
  let lo = (vec4<i32>(bitcast<i32>(weight[row_word + 2u * u])) << shifts) >> vec4<u32>(24u);
  let hi = (vec4<i32>(bitcast<i32>(weight[row_word + 2u * u + 1u])) << shifts) >> vec4<u32>(24u);
  return array<vec4<f32>, 2>(d * vec4<f32>(lo), d * vec4<f32>(hi));
}
fn unit_x4(u: u32, k: u32) -> u32 { return 2u * u + k; }
#endif

#if LAYOUT_Q4_0
const CHUNK: u32 = 32u;
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  let d = half_at(row_word + plane1, c);
  var out = block_nibbles(row_word + 4u * c);
  for (var e = 0u; e < CHUNK; e++) { out[e] = d * (out[e] - 8.0); }
  return out;
}
const UNIT: u32 = 8u;
fn decode_unit(row_word: u32, u: u32, plane1: u32, plane2: u32) -> array<vec4<f32>, 2> {
  let d = half_at(row_word + plane1, u / 4u);
  let q = nibble_unit(weight[row_word + u]);
  return array<vec4<f32>, 2>(d * (q[0] - 8.0), d * (q[1] - 8.0));
}
fn unit_x4(u: u32, k: u32) -> u32 { return nibble_x4(u, k); }
#endif

#if LAYOUT_Q4_1
const CHUNK: u32 = 32u;
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  let dm = unpack2x16float(weight[row_word + plane1 + c]);
  var out = block_nibbles(row_word + 4u * c);
  for (var e = 0u; e < CHUNK; e++) { out[e] = dm.x * out[e] + dm.y; }
  return out;
}
const UNIT: u32 = 8u;
fn decode_unit(row_word: u32, u: u32, plane1: u32, plane2: u32) -> array<vec4<f32>, 2> {
  let dm = unpack2x16float(weight[row_word + plane1 + u / 4u]);
  let q = nibble_unit(weight[row_word + u]);
  return array<vec4<f32>, 2>(dm.x * q[0] + dm.y, dm.x * q[1] + dm.y);
}
fn unit_x4(u: u32, k: u32) -> u32 { return nibble_x4(u, k); }
#endif

#if LAYOUT_Q5_0
const CHUNK: u32 = 32u;
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  let qh = weight[row_word + plane1 + c];
  let d = half_at(row_word + plane2, c);
  var out = block_nibbles(row_word + 4u * c);
  for (var e = 0u; e < CHUNK; e++) {
    out[e] = d * (out[e] + f32(((qh >> e) & 1u) << 4u) - 16.0);
  }
  return out;
}
const UNIT: u32 = 8u;
fn decode_unit(row_word: u32, u: u32, plane1: u32, plane2: u32) -> array<vec4<f32>, 2> {
  let h = high_bits(weight[row_word + plane1 + u / 4u], u);
  let d = half_at(row_word + plane2, u / 4u);
  let q = nibble_unit(weight[row_word + u]);
  return array<vec4<f32>, 2>(d * (q[0] + h[0] - 16.0), d * (q[1] + h[1] - 16.0));
}
fn unit_x4(u: u32, k: u32) -> u32 { return nibble_x4(u, k); }
#endif

#if LAYOUT_Q5_1
const CHUNK: u32 = 32u;
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  let qh = weight[row_word + plane1 + c];
  let dm = unpack2x16float(weight[row_word + plane2 + c]);
  var out = block_nibbles(row_word + 4u * c);
  for (var e = 0u; e < CHUNK; e++) {
    out[e] = dm.x * (out[e] + f32(((qh >> e) & 1u) << 4u)) + dm.y;
  }
  return out;
}
const UNIT: u32 = 8u;
fn decode_unit(row_word: u32, u: u32, plane1: u32, plane2: u32) -> array<vec4<f32>, 2> {
  let h = high_bits(weight[row_word + plane1 + u / 4u], u);
  let dm = unpack2x16float(weight[row_word + plane2 + u / 4u]);
  let q = nibble_unit(weight[row_word + u]);
  return array<vec4<f32>, 2>(dm.x * (q[0] + h[0]) + dm.y, dm.x * (q[1] + h[1]) + dm.y);
}
fn unit_x4(u: u32, k: u32) -> u32 { return nibble_x4(u, k); }
#endif

#if LAYOUT_Q4_K
const CHUNK: u32 = 32u;
// Super-block: 36 words = (d, dmin), 3 words of scales, 32 words of nibbles in which each
// run of 8 words holds sub-blocks 2i (low nibbles) and 2i + 1 (high nibbles).
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  let blk = row_word + 36u * (c / 8u);
  let j = c % 8u;
  let s = kquant_scale_min(blk, j);
  let qs = blk + 4u + 8u * (j / 2u);
  let shift = 4u * (j & 1u);
  var out: array<f32, CHUNK>;
  for (var i = 0u; i < 8u; i++) {
    let word = weight[qs + i];
    for (var lane = 0u; lane < 4u; lane++) {
      out[4u * i + lane] = s.x * f32((word >> (8u * lane + shift)) & 15u) - s.y;
    }
  }
  return out;
}
const UNIT: u32 = CHUNK;
fn decode_unit(row_word: u32, u: u32, plane1: u32, plane2: u32) -> array<vec4<f32>, UNIT / 4u> {
  return chunk_unit(row_word, u, plane1, plane2);
}
fn unit_x4(u: u32, k: u32) -> u32 { return chunk_x4(u, k); }
#endif

#if LAYOUT_Q5_K
const CHUNK: u32 = 32u;
// Super-block: 44 words = header (as Q4_K), 8 words qh (byte l, bit j: 5th bit of element l
// of sub-block j), 32 words of nibbles (as Q4_K).
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  let blk = row_word + 44u * (c / 8u);
  let j = c % 8u;
  let s = kquant_scale_min(blk, j);
  let qs = blk + 12u + 8u * (j / 2u);
  let shift = 4u * (j & 1u);
  var out: array<f32, CHUNK>;
  for (var i = 0u; i < 8u; i++) {
    let word = weight[qs + i];
    let high = weight[blk + 4u + i];
    for (var lane = 0u; lane < 4u; lane++) {
      let q = ((word >> (8u * lane + shift)) & 15u) | (((high >> (8u * lane + j)) & 1u) << 4u);
      out[4u * i + lane] = s.x * f32(q) - s.y;
    }
  }
  return out;
}
const UNIT: u32 = CHUNK;
fn decode_unit(row_word: u32, u: u32, plane1: u32, plane2: u32) -> array<vec4<f32>, UNIT / 4u> {
  return chunk_unit(row_word, u, plane1, plane2);
}
fn unit_x4(u: u32, k: u32) -> u32 { return chunk_x4(u, k); }
#endif

#if LAYOUT_Q6_K
const CHUNK: u32 = 32u;
// Super-block body: 52 words = ql[128 bytes], qh[64 bytes], int8 scales[16]; d in plane 1.
// Chunk j of a super-block: half h = j / 4 and part p = j % 4; element l takes the low
// nibble (p < 2) or high nibble (p >= 2) of ql byte 64h + 32(p & 1) + l, bits 2p..2p+1 of
// qh byte 32h + l, and scale 8h + 2p + l / 16.
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  let sb = c / 8u;
  let blk = row_word + 52u * sb;
  let d = half_at(row_word + plane1, sb);
  let h = (c % 8u) / 4u;
  let p = c % 4u;
  let ql = blk + 16u * h + 8u * (p & 1u);
  let qh = blk + 32u + 8u * h;
  let nib = 4u * (p >> 1u);
  let sc = 8u * h + 2u * p;
  let scale_lo = d * int8_at(weight[blk + 48u + sc / 4u], sc % 4u);
  let scale_hi = d * int8_at(weight[blk + 48u + (sc + 1u) / 4u], (sc + 1u) % 4u);
  var out: array<f32, CHUNK>;
  for (var i = 0u; i < 8u; i++) {
    let low = weight[ql + i];
    let high = weight[qh + i];
    let scale = select(scale_hi, scale_lo, i < 4u);
    for (var lane = 0u; lane < 4u; lane++) {
      let q = ((low >> (8u * lane + nib)) & 15u) | (((high >> (8u * lane + 2u * p)) & 3u) << 4u);
      out[4u * i + lane] = scale * (f32(q) - 32.0);
    }
  }
  return out;
}
const UNIT: u32 = CHUNK;
fn decode_unit(row_word: u32, u: u32, plane1: u32, plane2: u32) -> array<vec4<f32>, UNIT / 4u> {
  return chunk_unit(row_word, u, plane1, plane2);
}
fn unit_x4(u: u32, k: u32) -> u32 { return chunk_x4(u, k); }
#endif
