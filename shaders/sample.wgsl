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
// Bindings: logits (0, f32 [vocab]), token (1, u32 [1]), ring (2, u32 [ring_len]), params (3).
// Dispatch: (1, 1, 1): one workgroup of WG (a power of two) invocations.

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

override WG: u32 = 256;
const LOWEST: f32 = -3.4028234e38;  // ~ -FLT_MAX

#include "reduce.wgsl"

var<workgroup> best_value: array<f32, WG>;
var<workgroup> best_index: array<u32, WG>;
var<workgroup> chunk_mass: array<f32, WG>;   // kept mass of each invocation's chunk
var<workgroup> chunk_start: array<f32, WG>;  // exclusive prefix sum of chunk_mass
var<workgroup> winner: u32;                  // invocation whose chunk holds the draw
var<workgroup> residual: f32;                // the draw's target mass within that chunk
var<workgroup> drawn: u32;

fn capped(i: u32) -> f32 {
  let l = logits[i];
  if (params.softcap > 0.0) {
    return params.softcap * tanh(clamp(l / params.softcap, -10.0, 10.0));
  }
  return l;
}

// Order-preserving map of f32 to u32: a < b  <=>  key(a) < key(b) (for non-NaN values).
fn key(z: f32) -> u32 {
  let bits = bitcast<u32>(z);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
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

// Index of the largest capped logit, lowest index on ties; every invocation gets it.
fn find_argmax(lid: u32) -> u32 {
  var value = LOWEST;
  var index = 0xFFFFFFFFu;
  for (var i = lid; i < params.vocab; i += WG) {
    let z = capped(i);
    if (z > value || (z == value && index == 0xFFFFFFFFu)) {
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
  return select(best, 0u, best >= params.vocab);
}

// Kept-token count (mass = false) or mass exp(z - z_max) (mass = true) over keys >= threshold.
fn above(lid: u32, threshold: u32, z_max: f32, mass: bool) -> f32 {
  var sum = 0.0;
  for (var i = lid; i < params.vocab; i += WG) {
    let z = capped(i) / params.temperature;
    if (key(z) >= threshold) { sum += select(1.0, exp(z - z_max), mass); }
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

fn emit(lid: u32, n: u32, id: u32) {
  if (lid == 0u) {
    ring[(params.step + n) % params.ring_len] = id;
    token[0] = id;
  }
}

@compute @workgroup_size(WG)
fn argmax(@builtin(local_invocation_index) lid: u32) {
  emit(lid, 0u, find_argmax(lid));
}

@compute @workgroup_size(WG)
fn sample(@builtin(local_invocation_index) lid: u32) {
  if (params.temperature <= 0.0) {
    let id = find_argmax(lid);
    for (var n = 0u; n < params.n_draws; n++) { emit(lid, n, id); }
    return;
  }
  var local_max = LOWEST;
  for (var i = lid; i < params.vocab; i += WG) {
    local_max = max(local_max, capped(i) / params.temperature);
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
  // Each invocation owns a contiguous chunk of the vocabulary, for the index-order CDF.
  let size = (params.vocab + WG - 1u) / WG;
  let first = min(lid * size, params.vocab);
  let last = min(first + size, params.vocab);
  var mass = 0.0;
  for (var i = first; i < last; i++) {
    let z = capped(i) / params.temperature;
    if (key(z) >= keep) { mass += exp(z - z_max); }
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
        if (key(z) >= keep) {
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
