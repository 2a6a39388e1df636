// Workgroup reductions shared by the kernels that include this file.
//
// The includer declares `override WG: u32` or `const WG: u32` (its workgroup size, a power
// of two) and calls these from uniform control flow with every invocation of the workgroup
// taking part; they return the same result to all invocations. `red` is scratch owned by
// these helpers.

var<workgroup> red: array<f32, WG>;

fn wg_sum(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { red[lid] += red[lid + stride]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

fn wg_max(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { red[lid] = max(red[lid], red[lid + stride]); }
    workgroupBarrier();
  }
  let best = red[0];
  workgroupBarrier();
  return best;
}
