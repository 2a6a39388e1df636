// Next-token choice on the GPU, so only the 4-byte id ever needs reading back.
//
// argmax: the index of the largest (soft-capped) logit, ties to the lowest index (numpy's
//   argmax); NaN logits never win.
// sample: z_i = cap(logits[i]) / temperature, cap(l) = softcap * tanh(l / softcap) when
//   softcap > 0 (Gemma 2/3 final_logit_softcapping); then HF's warpers in HF's order:
//   top-k keeps z >= (k-th largest z) (ties kept), top-p keeps the tokens whose mass
//   strictly above them (in the top-k-renormalised softmax) is < top_p (ties kept, the top
//   token always); a draw u = PCG(seed, step) in [0, 1) picks by inverse CDF in index order
//   over the kept tokens' exp(z - max z). temperature <= 0 means greedy (argmax).
//   Thresholds are exact order statistics found by bisection on the order-preserving u32 key
//   of z (32 counting passes for top-k, 32 mass passes for top-p; no sort, no histogram
//   atomics), then n_draws draws reuse them (tests draw thousands in one dispatch; the
//   generation loop uses n_draws = 1).
// Outputs: draw n (n < n_draws) uses RNG counter step + n and is stored in
// ring[(step + n) % ring_len]; token[0] receives the last draw (the next embed's input).
//
// Two stages (flag CANDIDATES), for greedy or 0 < top_k <= K:
// candidates: a workgroup per BLOCK logits ranks its tokens by the key of z (of the capped
//   logit when greedy; -0 ranks as +0 since argmax ties are float ties; NaN never ranks),
//   finds the block's K-th largest rank by bisection over registers, and writes the tokens
//   ranked at or above it, in index order, to the block's K slots of cand_value (capped
//   logit) and cand_index (vocabulary id); unused slots hold LOWEST and NONE and are never
//   kept. Each token of the global top k (k <= K), and the lowest-index maximum, is at or
//   above its block's threshold, so the list (block after block: index order) yields the
//   same thresholds, CDF order and argmax ties as the whole vocabulary. A block with more
//   than K tokens at or above its threshold (ties at it) sets overflow[block] instead.
// sample / argmax (CANDIDATES): the algorithm above over the candidate list, mapping the
//   chosen slot to its id; over the whole logits when any block overflowed.
// Without CANDIDATES (temperature > 0 with top_k 0 or > K) it is one dispatch over the whole
// vocabulary: correct but slow (~65 full scans for top-k + top-p, ~13 ms per token for
// 262k logits on an H100).
//
// Bindings: logits (0, f32 [vocab]), token (1, u32 [1]), ring (2, u32 [ring_len]),
// params (3); with CANDIDATES: cand_value (4, f32 [blocks * K]), cand_index (5, u32
// [blocks * K]), overflow (6, u32 [blocks]), blocks = ceil(vocab / BLOCK).
// Dispatch: sample, argmax: (1, 1, 1), one workgroup of WG invocations; candidates:
// (blocks, 1, 1).

struct Params {
  vocab: u32,
  top_k: u32,        // 0 or >= vocab: off
  top_p: f32,        // >= 1: off
  temperature: f32,  // <= 0: greedy
  softcap: f32,      // final logit soft-capping; 0 = off
  seed: u32,
  step: u32,         // RNG counter of the first draw, and its ring slot (mod ring_len)
  n_draws: u32,      // independent draws with counters step, step + 1, ...; 1 when generating
  ring_len: u32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read_write> token: array<u32>;
@group(0) @binding(2) var<storage, read_write> ring: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

const WG: u32 = 256u;      // a power of two
const LOWEST: f32 = -3.4028234e38;  // ~ -FLT_MAX
const NONE: u32 = 0xFFFFFFFFu;

#include "reduce.wgsl"

var<workgroup> best_value: array<f32, WG>;
var<workgroup> best_index: array<u32, WG>;
var<workgroup> chunk_mass: array<f32, WG>;   // kept mass of each invocation's chunk
var<workgroup> chunk_start: array<f32, WG>;  // exclusive prefix sum of chunk_mass
var<workgroup> winner: u32;                  // invocation whose chunk holds the draw
var<workgroup> residual: f32;                // the draw's target mass within that chunk
var<workgroup> drawn: u32;

fn cap(l: f32) -> f32 {
  if (params.softcap > 0.0) {
    return params.softcap * tanh(clamp(l / params.softcap, -10.0, 10.0));
  }
  return l;
}

#if CANDIDATES
const K: u32 = 64u;        // candidate slots per block: the largest top_k served
const BLOCK: u32 = 4096u;  // logits per candidates workgroup
const PER: u32 = BLOCK / WG;  // logits each invocation holds in registers

@group(0) @binding(4) var<storage, read_write> cand_value: array<f32>;
@group(0) @binding(5) var<storage, read_write> cand_index: array<u32>;
@group(0) @binding(6) var<storage, read_write> overflow: array<u32>;

var<workgroup> scan: array<u32, WG>;
var<private> from_candidates: bool = false;  // the list is the candidates, not the logits

fn blocks() -> u32 {
  return (params.vocab + BLOCK - 1u) / BLOCK;
}

// The list the algorithm runs over: entry i's vocabulary id (NONE: unused) and capped logit.
fn list_len() -> u32 {
  return select(params.vocab, blocks() * K, from_candidates);
}

fn token_at(i: u32) -> u32 {
  if (from_candidates) { return select(NONE, cand_index[i], i < list_len()); }
  return i;
}

fn capped(i: u32) -> f32 {
  if (from_candidates) { return cand_value[i]; }
  return cap(logits[i]);
}

// Run over the candidates unless a block overflowed (then its ties may not all be there).
fn choose_list(lid: u32) {
  var flagged = 0.0;
  for (var b = lid; b < blocks(); b += WG) {
    flagged = max(flagged, select(0.0, 1.0, overflow[b] != 0u));
  }
  from_candidates = wg_max(lid, flagged) == 0.0;
}
#else
fn list_len() -> u32 {
  return params.vocab;
}

fn token_at(i: u32) -> u32 {
  return i;
}

fn capped(i: u32) -> f32 {
  return cap(logits[i]);
}

fn choose_list(lid: u32) {}
#endif

// Order-preserving map of f32 to u32: a < b  <=>  key(a) < key(b) (for non-NaN values).
fn key(z: f32) -> u32 {
  let bits = bitcast<u32>(z);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

fn kept(i: u32, z: f32, threshold: u32) -> bool {
  return key(z) >= threshold && token_at(i) != NONE;
}

fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}

// A uniform draw in [0, 1) with 24 random bits, from (seed, counter).
fn uniform01(counter: u32) -> f32 {
  return f32(pcg(pcg(params.seed) ^ counter) >> 8u) * (1.0 / 16777216.0);
}

// List position of the largest capped logit, lowest on ties (NONE if all are NaN or
// unused); every invocation gets it.
fn find_argmax(lid: u32) -> u32 {
  var value = LOWEST;
  var index = NONE;
  for (var i = lid; i < list_len(); i += WG) {
    let z = capped(i);
    if (token_at(i) != NONE && (z > value || (z == value && index == NONE))) {
      value = z;
      index = i;
    }
  }
  best_value[lid] = value;
  best_index[lid] = index;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      let v = best_value[lid + stride];
      let j = best_index[lid + stride];
      if (v > best_value[lid] || (v == best_value[lid] && j < best_index[lid])) {
        best_value[lid] = v;
        best_index[lid] = j;
      }
    }
    workgroupBarrier();
  }
  let best = best_index[0];
  workgroupBarrier();
  return best;
}

// Kept-token count (mass = false) or mass exp(z - z_max) (mass = true) over keys >= threshold.
fn above(lid: u32, threshold: u32, z_max: f32, mass: bool) -> f32 {
  var sum = 0.0;
  for (var i = lid; i < list_len(); i += WG) {
    let z = capped(i) / params.temperature;
    if (kept(i, z, threshold)) { sum += select(1.0, exp(z - z_max), mass); }
  }
  return wg_sum(lid, sum);
}

// The largest key t with above(t) >= target: built bit by bit from the top.
fn threshold_key(lid: u32, goal: f32, z_max: f32, mass: bool) -> u32 {
  var t = 0u;
  for (var bit = 31; bit >= 0; bit--) {
    let candidate = t | (1u << u32(bit));
    t = select(t, candidate, above(lid, candidate, z_max, mass) >= goal);
  }
  return t;
}

// Store list entry `position` as draw n; a position without a token (all NaN) stores 0.
fn emit(lid: u32, n: u32, position: u32) {
  let id = token_at(min(position, list_len()));
  if (lid == 0u) {
    let chosen = select(id, 0u, id >= params.vocab);
    ring[(params.step + n) % params.ring_len] = chosen;
    token[0] = chosen;
  }
}

@compute @workgroup_size(WG)
fn argmax(@builtin(local_invocation_index) lid: u32) {
  choose_list(lid);
  emit(lid, 0u, find_argmax(lid));
}

@compute @workgroup_size(WG)
fn sample(@builtin(local_invocation_index) lid: u32) {
  choose_list(lid);
  if (params.temperature <= 0.0) {
    let best = find_argmax(lid);
    for (var n = 0u; n < params.n_draws; n++) { emit(lid, n, best); }
    return;
  }
  var local_max = LOWEST;
  for (var i = lid; i < list_len(); i += WG) {
    local_max = max(local_max, capped(i) / params.temperature);  // unused slots: LOWEST
  }
  let z_max = wg_max(lid, local_max);
  var keep = 0u;
  if (params.top_k > 0u && params.top_k < params.vocab) {
    keep = threshold_key(lid, f32(params.top_k), z_max, false);
  }
  if (params.top_p < 1.0) {
    let goal = params.top_p * above(lid, keep, z_max, true);
    keep = min(max(keep, threshold_key(lid, goal, z_max, true)), key(z_max));
  }
  // Each invocation owns a contiguous chunk of the list, for the index-order CDF.
  let size = (list_len() + WG - 1u) / WG;
  let first = min(lid * size, list_len());
  let last = min(first + size, list_len());
  var mass = 0.0;
  for (var i = first; i < last; i++) {
    let z = capped(i) / params.temperature;
    if (kept(i, z, keep)) { mass += exp(z - z_max); }
  }
  chunk_mass[lid] = mass;
  workgroupBarrier();
  if (lid == 0u) {
    var total = 0.0;
    for (var c = 0u; c < WG; c++) {
      chunk_start[c] = total;
      total += chunk_mass[c];
    }
  }
  workgroupBarrier();
  let total = chunk_start[WG - 1u] + chunk_mass[WG - 1u];
  for (var n = 0u; n < params.n_draws; n++) {
    if (lid == 0u) {
      let goal = uniform01(params.step + n) * total;
      var w = 0u;
      for (var c = 0u; c < WG; c++) {
        if (chunk_mass[c] > 0.0 && chunk_start[c] <= goal) { w = c; }
      }
      winner = w;
      residual = goal - chunk_start[w];
    }
    workgroupBarrier();
    if (lid == winner) {
      var running = 0.0;
      var pick = first;
      for (var i = first; i < last; i++) {
        let z = capped(i) / params.temperature;
        if (kept(i, z, keep)) {
          pick = i;
          running += exp(z - z_max);
          if (running > residual) { break; }
        }
      }
      drawn = pick;
    }
    workgroupBarrier();
    emit(lid, n, drawn);
    workgroupBarrier();
  }
}
#if CANDIDATES

// The order the candidates stage ranks by: the key of z (of the capped logit when greedy),
// -0 as +0; 0 (below every real rank) for NaN and for positions past the vocabulary.
fn rank(i: u32) -> u32 {
  if (i >= params.vocab) { return 0u; }
  let l = cap(logits[i]);
  let z = select(l, l / params.temperature, params.temperature > 0.0);
  if ((bitcast<u32>(z) & 0x7FFFFFFFu) > 0x7F800000u) { return 0u; }
  return select(key(z), key(0.0), z == 0.0);
}

fn count_at_least(ranks: ptr<function, array<u32, PER>>, t: u32) -> u32 {
  var n = 0u;
  for (var j = 0u; j < PER; j++) { n += select(0u, 1u, (*ranks)[j] >= t); }
  return n;
}

// (exclusive prefix sum of v over invocations, total): each invocation's first slot.
fn exclusive_scan(lid: u32, v: u32) -> vec2<u32> {
  scan[lid] = v;
  workgroupBarrier();
  for (var stride = 1u; stride < WG; stride *= 2u) {
    let add = select(0u, scan[lid - stride], lid >= stride);
    workgroupBarrier();
    scan[lid] += add;
    workgroupBarrier();
  }
  let inclusive = scan[lid];
  let total = scan[WG - 1u];
  workgroupBarrier();
  return vec2<u32>(inclusive - v, total);
}

@compute @workgroup_size(WG)
fn candidates(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let block = wid.x;
  let first = block * BLOCK + lid * PER;  // a contiguous run: index order within the block
  var ranks = array<u32, PER>();
  for (var j = 0u; j < PER; j++) { ranks[j] = rank(first + j); }
  // The block's K-th largest rank: the largest t with K ranks >= t (0 if fewer than K).
  var t = 0u;
  for (var bit = 31; bit >= 0; bit--) {
    let trial = t | (1u << u32(bit));
    t = select(t, trial, wg_sum(lid, f32(count_at_least(&ranks, trial))) >= f32(K));
  }
  let threshold = max(t, 1u);  // rank 0 (NaN, past the end) is never a candidate
  let slots = exclusive_scan(lid, count_at_least(&ranks, threshold));
  let base = block * K;
  var slot = slots.x;
  for (var j = 0u; j < PER; j++) {
    if (ranks[j] >= threshold && slot < K) {
      cand_value[base + slot] = cap(logits[first + j]);
      cand_index[base + slot] = first + j;
      slot++;
    }
  }
  for (var s = slots.y + lid; s < K; s += WG) {
    cand_value[base + s] = LOWEST;
    cand_index[base + s] = NONE;
  }
  if (lid == 0u) { overflow[block] = select(0u, 1u, slots.y > K); }
}
#endif
