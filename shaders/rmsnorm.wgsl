// RMSNorm over rows: y[r, i] = x[r, i] / sqrt(mean_i(x[r, i]^2) + eps) * (w[i] + weight_offset)
// One workgroup per row; threads stride over the row, then a tree reduction in workgroup
// memory (or subgroup sums when the device has subgroups). weight_offset is 1 for models
// whose checkpoints store (w - 1), e.g. Gemma. With `accumulate` it adds instead of storing,
// y[r, i] += ..., so a post-norm and its residual add are one dispatch. x may come in K
// slices (matmul_quant.wgsl's split K): x[r, i] is then the sum of `slices` buffers of rows,
// slice_stride elements apart.

struct Params {
  rows: u32,
  n: u32,
  eps: f32,
  weight_offset: f32,
  accumulate: u32,  // 1: y += the normed row (a residual add); 0: y = it
  slices: u32,      // K slices summed into x (1: x as it is)
  slice_stride: u32,
  _pad0: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 256;
var<workgroup> partial: array<f32, WG>;

fn input(i: u32) -> f32 {
  var v = 0.0;
  for (var s = 0u; s < params.slices; s++) { v += x[s * params.slice_stride + i]; }
  return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;
  if (row >= params.rows) { return; }
  let base = row * params.n;
  var sum = 0.0;
  for (var i = lid; i < params.n; i += WG) {
    let v = input(base + i);
    sum += v * v;
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let scale = inverseSqrt(partial[0] / f32(params.n) + params.eps);
  for (var i = lid; i < params.n; i += WG) {
    let value = input(base + i) * scale * (w[i] + params.weight_offset);
    if (params.accumulate != 0u) { y[base + i] += value; } else { y[base + i] = value; }
  }
}
