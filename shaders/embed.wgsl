// Embedding gather: out[t, :] = scale * table[ids[id_offset + t], :] for t < n_tokens.
//
// The token ids live in a GPU buffer so a decode step can read the id the sampler just
// wrote (sample.wgsl's `token`) without a readback. Gemma passes scale = sqrt(hidden) (as an
// f32); other models 1.0. An id >= vocab yields a row of zeros (the host validates ids).
//
// Split tables: a table larger than maxStorageBufferBindingSize is stored as row parts
// (doppler.model.weights); bind one part, set row0/rows to the ids it holds and dispatch once
// per part: a part writes only the tokens whose id it holds, and the last part (row0 + rows
// == vocab) also writes the zero rows of ids >= vocab. Unsplit: row0 = 0, rows = vocab.
//
// Layouts: `weight` is a packed table of logical shape (vocab, hidden) in any layout of
// dequant.wgsl, selected by one LAYOUT_<NAME> flag (f32, f16, bf16, q8_0, ..., q6_k; the
// f32/f16 layouts are plain rows padded to 16 bytes). ids: u32. out: f32 (n_tokens, hidden).
// Bindings: weight (0), ids (1), out (2), params (3).
// Dispatch: (ceil(ceil(hidden / CHUNK) / WG), n_tokens); each invocation writes one chunk
// (CHUNK = 4, 8 or 32 elements, see dequant.wgsl) of one token's row.

struct Params {
  n_tokens: u32,
  hidden: u32,
  vocab: u32,
  scale: f32,
  row_words: u32,  // Layout.row_bytes(hidden) / 4
  plane1: u32,     // Layout.plane_offsets((hidden,)) / 4 of the 2nd and 3rd planes (else 0)
  plane2: u32,
  id_offset: u32,  // index in `ids` of token 0
  row0: u32,       // first id held by this binding (split tables), else 0
  rows: u32,       // ids held by this binding, else vocab
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<storage, read> weight: array<u32>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 64;

#include "dequant.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.y;
  let first = gid.x * CHUNK;
  if (t >= params.n_tokens || first >= params.hidden) { return; }
  let id = ids[params.id_offset + t];
  let count = min(CHUNK, params.hidden - first);
  let base = t * params.hidden + first;
  if (id >= params.vocab && params.row0 + params.rows == params.vocab) {
    for (var e = 0u; e < count; e++) { out[base + e] = 0.0; }
    return;
  }
  if (id < params.row0 || id - params.row0 >= params.rows) { return; }
  let row = id - params.row0;
  var values = decode_chunk(row * params.row_words, gid.x, params.plane1, params.plane2);
  for (var e = 0u; e < count; e++) { out[base + e] = values[e] * params.scale; }
}
