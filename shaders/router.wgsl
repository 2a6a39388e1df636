// Mixture-of-Experts routing on the GPU: from router logits, each token's top-k expert ids
// and their mixing weights, so the expert FFN (moe.wgsl) reads its choices from GPU buffers
// and a fully resident model decodes with no readback.
//
// topk: per token t, over its logits l[e] = logits[t * n_experts + e], e < n_experts:
//   scoring 0 (softmax; Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE):
//     selection key  = l[e] (the softmax is monotonic, so ranking the logits is exact)
//     weight         = scale * exp(l[e] - m) / D, m = max l, D = sum over all experts of
//                      exp(l - m), or over the k chosen when renormalize = 1 (Mixtral
//                      always; Qwen/OLMoE when norm_topk_prob)
//   scoring 1 (sigmoid; DeepSeek-V3):
//     selection key  = sigmoid(l[e]) + bias[e] (e_score_correction_bias: selection only)
//     weight         = scale * sigmoid(l[e]) / D, D = 1, or (sum over the k chosen of
//                      sigmoid(l)) + 1e-20 when renormalize = 1 (norm_topk_prob);
//                      scale = routed_scaling_factor (1 for the softmax models above)
//   Group-limited selection (DeepSeek-V3; off when n_group <= 1): the experts form n_group
//   consecutive groups of n_experts / n_group; a group's score is the sum of its two largest
//   keys; only experts of the topk_group best groups are eligible. Needs
//   n_experts % n_group == 0, group size >= 2 and top_k <= topk_group * group size.
//   Order and ties: expert a ranks before b when it is eligible and b is not, else when its
//   key is larger, else when a < b (lowest index first; groups likewise). The output is in
//   rank order: ids[t * top_k + i] is the expert of rank i, weights[t * top_k + i] its weight.
//   (torch.topk agrees on distinct keys; its order among equal keys is unspecified.)
//   Keys are ranked by counting, for each expert, the experts that rank before it: no sort
//   and no per-choice barrier rounds. Logits are assumed finite.
//
// Bindings: logits (0, f32 [n_tokens, n_experts]), bias (1, f32 [n_experts]; read only when
// scoring = 1, bind any small buffer otherwise), ids (2, u32 [n_tokens, top_k]),
// weights (3, f32 [n_tokens, top_k]), params (4).
// Dispatch: (grid_x, ceil(n_tokens / grid_x)), grid_x = min(n_tokens, 65535): one workgroup
// of WG invocations (a power of two) per token; top_k <= n_experts <= MAX_EXPERTS.

struct Params {
  n_tokens: u32,
  n_experts: u32,
  top_k: u32,
  grid_x: u32,       // workgroups along x: token = wid.y * grid_x + wid.x
  scoring: u32,      // 0 = softmax, 1 = sigmoid
  renormalize: u32,  // 1: divide by the chosen experts' total (see above)
  n_group: u32,      // group-limited selection when > 1
  topk_group: u32,   // groups kept
  scale: f32,        // routed_scaling_factor; 1.0 when the model has none
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

const SCORING_SOFTMAX: u32 = 0u;
const SCORING_SIGMOID: u32 = 1u;

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> weights: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

override WG: u32 = 64;
override MAX_EXPERTS: u32 = 256;

#include "reduce.wgsl"

var<workgroup> keys: array<f32, MAX_EXPERTS>;
var<workgroup> eligible: array<bool, MAX_EXPERTS>;
var<workgroup> group_score: array<f32, MAX_EXPERTS>;

fn sigmoid(v: f32) -> f32 {
  return 1.0 / (1.0 + exp(-v));
}

// The unnormalised weight of expert e: exp(l - m) (softmax) or sigmoid(l).
fn raw_weight(l: f32, m: f32) -> f32 {
  return select(exp(l - m), sigmoid(l), params.scoring == SCORING_SIGMOID);
}

fn ranks_before(a_key: f32, a: u32, b_key: f32, b: u32) -> bool {
  return a_key > b_key || (a_key == b_key && a < b);
}

// Rank of expert e among all experts: eligibility first, then key, then index.
fn expert_rank(e: u32) -> u32 {
  var rank = 0u;
  for (var o = 0u; o < params.n_experts; o++) {
    let before = select(ranks_before(keys[o], o, keys[e], e), eligible[o], eligible[o] != eligible[e]);
    rank += u32(before);
  }
  return rank;
}

// Sum of the two largest keys of group g (DeepSeek-V3's group score).
fn top2_sum(g: u32, size: u32) -> f32 {
  var first = keys[g * size];
  var second = keys[g * size + 1u];
  if (second > first) {
    let t = first;
    first = second;
    second = t;
  }
  for (var i = 2u; i < size; i++) {
    let v = keys[g * size + i];
    if (v > first) {
      second = first;
      first = v;
    } else if (v > second) {
      second = v;
    }
  }
  return first + second;
}

// Marks the experts of the topk_group best groups eligible (all experts when n_group <= 1).
fn limit_groups(lid: u32) {
  let grouped = params.n_group > 1u;
  let size = params.n_experts / max(params.n_group, 1u);
  if (grouped) {
    for (var g = lid; g < params.n_group; g += WG) { group_score[g] = top2_sum(g, size); }
  }
  workgroupBarrier();
  for (var e = lid; e < params.n_experts; e += WG) {
    var keep = true;
    if (grouped) {
      let g = e / size;
      var rank = 0u;
      for (var o = 0u; o < params.n_group; o++) {
        rank += u32(ranks_before(group_score[o], o, group_score[g], g));
      }
      keep = rank < params.topk_group;
    }
    eligible[e] = keep;
  }
  workgroupBarrier();
}

@compute @workgroup_size(WG)
fn topk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let t = wid.y * params.grid_x + wid.x;
  if (t >= params.n_tokens) { return; }
  let row = t * params.n_experts;
  let sigmoid_scoring = params.scoring == SCORING_SIGMOID;
  var local_max = -3.4028234e38;
  for (var e = lid; e < params.n_experts; e += WG) {
    let l = logits[row + e];
    local_max = max(local_max, l);
    keys[e] = select(l, sigmoid(l) + bias[e], sigmoid_scoring);
  }
  let m = wg_max(lid, local_max);  // its barriers also publish keys[]
  limit_groups(lid);

  // Each invocation ranks its own experts; the chosen ones add to the chosen total.
  var all_total = 0.0;
  var chosen_total = 0.0;
  for (var e = lid; e < params.n_experts; e += WG) {
    let w = raw_weight(logits[row + e], m);
    all_total += w;
    if (expert_rank(e) < params.top_k) { chosen_total += w; }
  }
  let all_sum = wg_sum(lid, all_total);
  let chosen_sum = wg_sum(lid, chosen_total);
  var denominator = 1.0;
  if (params.renormalize == 1u) {
    denominator = chosen_sum + select(0.0, 1e-20, sigmoid_scoring);
  } else if (!sigmoid_scoring) {
    denominator = all_sum;
  }
  for (var e = lid; e < params.n_experts; e += WG) {
    let rank = expert_rank(e);
    if (rank < params.top_k) {
      ids[t * params.top_k + rank] = e;
      weights[t * params.top_k + rank] = params.scale * raw_weight(logits[row + e], m) / denominator;
    }
  }
}
