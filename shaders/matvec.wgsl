// Matrix-vector product y = W x for a row-major W of shape (rows, cols), f32 weights.
// One workgroup per output row (rows beyond 65535 spill into the y dimension of the grid);
// threads stride over the row, then reduce in workgroup memory.

struct Params {
  rows: u32,
  cols: u32,
  grid_x: u32,   // workgroups per grid row, to rebuild the flat row index
  _pad: u32,
}

@group(0) @binding(0) var<storage, read> weight: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

override WG: u32 = 128;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * params.grid_x + wid.x;
  if (row >= params.rows) { return; }
  let base = row * params.cols;
  var sum = 0.0;
  for (var k = lid; k < params.cols; k += WG) {
    sum += weight[base + k] * x[k];
  }
  partial[lid] = sum;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u) { y[row] = partial[0]; }
}
