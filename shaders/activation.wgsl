// Elementwise ops on f32 vectors (batched: just longer vectors).
//
// gated: out[i] = act(gate[i]) * up[i], act = SiLU (x * sigmoid(x); Llama, Qwen) or GELU with
//        the tanh approximation (HF "gelu_pytorch_tanh"; Gemma's GeGLU).
//        Bindings: gate (0), up (1), out (2), params (3).
// add:   y[i] += x[i % period] for i < n: a residual add (period = n) or a bias broadcast
//        over tokens (period = bias length, y of shape (tokens, period)); x may come in K
//        slices (matmul_quant.wgsl's split K), then summed: x[j] = sum_s x[s * slice_stride + j].
//        Bindings: x (0), y (1, read-write), params (2).
// Dispatch either: (min(G, 65535), ceil(G / 65535)) with G = ceil(n / WG), grid_x = the first.

struct Params {
  n: u32,       // elements to produce
  period: u32,  // add: period of x (n for a residual add); unused by gated
  act: u32,     // gated: 0 = SiLU, 1 = GELU-tanh; unused by add
  grid_x: u32,  // workgroups along x: element i = (wid.y * grid_x + wid.x) * WG + lid
  slices: u32,  // add: K slices of x (1: x as it is)
  slice_stride: u32,
}

const ACT_SILU: u32 = 0u;
const ACT_GELU_TANH: u32 = 1u;

override WG: u32 = 256;

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> gated_params: Params;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> add_params: Params;

fn element(wid: vec3<u32>, lid: u32, grid_x: u32) -> u32 {
  return (wid.y * grid_x + wid.x) * WG + lid;
}

#include "act.wgsl"

@compute @workgroup_size(WG)
fn gated(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = element(wid, lid, gated_params.grid_x);
  if (i >= gated_params.n) { return; }
  let g = gate[i];
  let a = select(silu(g), gelu_tanh(g), gated_params.act == ACT_GELU_TANH);
  out[i] = a * up[i];
}

@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = element(wid, lid, add_params.grid_x);
  if (i >= add_params.n) { return; }
  var sum = 0.0;
  for (var s = 0u; s < add_params.slices; s++) {
    sum += x[s * add_params.slice_stride + i % add_params.period];
  }
  y[i] += sum;
}
