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

#if LAYOUT_F32
const CHUNK: u32 = 4u;
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  let at = row_word + 4u * c;
  return array<f32, CHUNK>(bitcast<f32>(weight[at]), bitcast<f32>(weight[at + 1u]),
                           bitcast<f32>(weight[at + 2u]), bitcast<f32>(weight[at + 3u]));
}
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
#endif

#if LAYOUT_Q4_0
const CHUNK: u32 = 32u;
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  let d = half_at(row_word + plane1, c);
  var out = block_nibbles(row_word + 4u * c);
  for (var e = 0u; e < CHUNK; e++) { out[e] = d * (out[e] - 8.0); }
  return out;
}
#endif

#if LAYOUT_Q4_1
const CHUNK: u32 = 32u;
fn decode_chunk(row_word: u32, c: u32, plane1: u32, plane2: u32) -> array<f32, CHUNK> {
  let dm = unpack2x16float(weight[row_word + plane1 + c]);
  var out = block_nibbles(row_word + 4u * c);
  for (var e = 0u; e < CHUNK; e++) { out[e] = dm.x * out[e] + dm.y; }
  return out;
}
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
#endif
