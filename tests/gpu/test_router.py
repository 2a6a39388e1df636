"""MoE routing on the GPU (shaders/router.wgsl) against a float64 numpy reference and against
transformers' own router modules (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V3).

Random logits are kept only where every decision (the k chosen experts, their order and, for
group-limited routing, the kept groups) has a margin well above float32 rounding, so ids can
be compared exactly; deliberate ties are tested against the kernel's documented rule.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from transformers import (
    DeepseekV3Config,
    MixtralConfig,
    OlmoeConfig,
    Qwen2MoeConfig,
    Qwen3MoeConfig,
)
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter
from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter
from transformers.models.olmoe.modeling_olmoe import OlmoeTopKRouter
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeTopKRouter
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter

from harness.kernels import params, read, shader_source, write

pytestmark = pytest.mark.browser

RNG = np.random.default_rng(41)
SOFTMAX, SIGMOID = 0, 1
MARGIN = 1e-4  # smallest key / group-score gap at a decision, relative to float32 rounding
PARAMS = "IIIIIIIIf"  # n_tokens, n_experts, top_k, grid_x, scoring, renormalize, n_group,
# topk_group, scale


@dataclass(frozen=True)
class Routing:
    n_experts: int
    top_k: int
    scoring: int = SOFTMAX
    renormalize: bool = False
    n_group: int = 1
    topk_group: int = 1
    scale: float = 1.0


def run(kernels, routing, logits, bias=None, *, wg=64, grid_x=None, source=None):
    """Returns (ids, weights), each (n_tokens, top_k)."""
    n_tokens = logits.shape[0]
    grid_x = grid_x or min(n_tokens, 65535)
    bias = np.zeros(routing.n_experts) if bias is None else bias
    r = routing
    ids, weights = kernels.run(
        "router",
        [
            read(0, logits.astype(np.float32)),
            read(1, bias.astype(np.float32)),
            write(2, n_tokens * r.top_k, np.uint32),
            write(3, n_tokens * r.top_k),
            params(
                4,
                PARAMS,
                n_tokens,
                r.n_experts,
                r.top_k,
                grid_x,
                r.scoring,
                int(r.renormalize),
                r.n_group,
                r.topk_group,
                r.scale,
            ),
        ],
        (grid_x, -(-n_tokens // grid_x)),
        entry="topk",
        constants={"WG": wg},
        source=source,
    )
    return ids.reshape(n_tokens, r.top_k), weights.reshape(n_tokens, r.top_k)


# ---- the float64 reference -----------------------------------------------------------------


def first_by(score: np.ndarray, count: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Per row, the ``count`` best columns: eligible first, then higher score, then lower
    index (the kernel's documented order)."""
    eligible = np.ones(score.shape, bool) if eligible is None else eligible
    index = np.broadcast_to(np.arange(score.shape[-1]), score.shape)
    order = np.lexsort((index, -score, ~eligible), axis=-1)
    return order[..., :count]


def keys_of(routing, logits, bias):
    """(selection keys, unnormalised weights). Sigmoid keys are built from the float32
    scores that transformers and the kernel rank (saturation to 1.0 makes real ties)."""
    l64 = logits.astype(np.float64)
    if routing.scoring == SOFTMAX:
        return l64, np.exp(l64 - l64.max(-1, keepdims=True))
    s = 1 / (1 + np.exp(-l64))
    return s.astype(np.float32) + bias.astype(np.float32).astype(np.float64), s


def group_scores(routing, keys):
    size = routing.n_experts // routing.n_group
    grouped = np.sort(keys.reshape(keys.shape[0], routing.n_group, size), axis=-1)
    return grouped[..., -2:].sum(-1)


def eligible_experts(routing, keys):
    if routing.n_group <= 1:
        return np.ones(keys.shape, bool)
    kept = first_by(group_scores(routing, keys), routing.topk_group)
    groups = np.zeros((keys.shape[0], routing.n_group), bool)
    np.put_along_axis(groups, kept, True, axis=-1)
    return np.repeat(groups, routing.n_experts // routing.n_group, axis=-1)


def route_ref(routing, logits, bias=None):
    """(ids, weights) in float64 exactly as router.wgsl documents them."""
    bias = np.zeros(routing.n_experts) if bias is None else bias.astype(np.float64)
    keys, raw = keys_of(routing, logits, bias)
    ids = first_by(keys, routing.top_k, eligible_experts(routing, keys))
    chosen = np.take_along_axis(raw, ids, axis=-1)
    if routing.renormalize:
        denominator = chosen.sum(-1, keepdims=True) + (1e-20 if routing.scoring else 0.0)
    else:
        denominator = raw.sum(-1, keepdims=True) if routing.scoring == SOFTMAX else 1.0
    return ids, routing.scale * chosen / denominator


def gaps(values: np.ndarray, count: int) -> np.ndarray:
    """Per row, the smallest gap among the count + 1 largest values (order and cut-off)."""
    top = -np.sort(-values, axis=-1)[..., : count + 1]
    return np.abs(np.diff(top, axis=-1)).min(-1, initial=np.inf)


def separated(routing, logits, bias=None):
    """Rows whose every routing decision has a gap of at least MARGIN."""
    bias = np.zeros(routing.n_experts) if bias is None else bias.astype(np.float64)
    keys, _ = keys_of(routing, logits, bias)
    eligible = eligible_experts(routing, keys)
    margin = gaps(np.where(eligible, keys, -np.inf), routing.top_k)
    if routing.n_group > 1:
        margin = np.minimum(margin, gaps(group_scores(routing, keys), routing.topk_group))
    return margin >= MARGIN


def random_logits(routing, n_tokens, bias=None):
    """n_tokens rows of random logits, every decision well separated."""
    rows = []
    while len(rows) < n_tokens:
        logits = (RNG.standard_normal((4 * n_tokens, routing.n_experts)) * 2.0).astype(np.float32)
        rows.extend(logits[separated(routing, logits, bias)])
    return np.stack(rows[:n_tokens])


def check(got, want):
    """Ids exactly (in rank order); weights within float32 rounding of exp/sigmoid and sums."""
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-7)


# ---- against the reference -----------------------------------------------------------------

DEEPSEEK_V3 = Routing(256, 8, SIGMOID, True, n_group=8, topk_group=4, scale=2.5)
CASES = {  # name: (routing, n_tokens, wg)
    "mixtral 8 top-2": (Routing(8, 2, renormalize=True), 5, 64),
    "softmax unrenormalised 60 top-4": (Routing(60, 4), 3, 64),
    "softmax renormalised 128 top-8 wg 32": (Routing(128, 8, renormalize=True), 2, 32),
    "softmax 7 top-7": (Routing(7, 7), 2, 64),
    "softmax 1 expert": (Routing(1, 1, renormalize=True), 2, 64),
    "softmax scaled 37 top-3 wg 256": (Routing(37, 3, scale=1.75), 3, 256),
    "sigmoid ungrouped 24 top-5": (Routing(24, 5, SIGMOID), 3, 64),
    "sigmoid renormalised 20 top-3 in 4 groups": (
        Routing(20, 3, SIGMOID, True, n_group=4, topk_group=2, scale=2.5),
        4,
        64,
    ),
    "sigmoid 18 top-4, 3 groups of 6 keep 1": (
        Routing(18, 4, SIGMOID, True, n_group=3, topk_group=1),
        3,
        32,
    ),
    "sigmoid groups of 2": (Routing(16, 3, SIGMOID, False, n_group=8, topk_group=3), 3, 64),
    "deepseek-v3 shape": (DEEPSEEK_V3, 2, 64),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_router_matches_numpy(kernels, case):
    routing, n_tokens, wg = CASES[case]
    bias = RNG.standard_normal(routing.n_experts) * 0.1 if routing.scoring == SIGMOID else None
    logits = random_logits(routing, n_tokens, bias=bias)
    check(run(kernels, routing, logits, bias, wg=wg), route_ref(routing, logits, bias))


def test_tokens_beyond_one_grid_row(kernels):
    routing = Routing(10, 3, renormalize=True)
    logits = random_logits(routing, 7)
    check(run(kernels, routing, logits, grid_x=3), route_ref(routing, logits))


TIES = {  # name: (routing, logits of one token, bias, expected ids)
    "equal logits: lowest index first": (
        Routing(6, 3, renormalize=True),
        [0.5, 2.0, 1.0, 2.0, 2.0, -1.0],
        None,
        [1, 3, 4],
    ),
    "tie at the cut-off keeps the lower index": (
        Routing(6, 2),
        [3.0, 1.0, 0.0, 1.0, 1.0, 0.0],
        None,
        [0, 1],
    ),
    "sigmoid saturated to 1.0 ties": (
        Routing(8, 2, SIGMOID, True),
        [0.0, 0.0, 20.0, 0.0, 0.0, 30.0, 40.0, 0.0],
        None,
        [2, 5],
    ),
    "group score tie keeps the lower group": (
        Routing(8, 2, SIGMOID, True, n_group=4, topk_group=1),
        [0.0, 0.0, 1.0, 2.0, 2.0, 1.0, 0.0, 0.0],
        None,
        [3, 2],
    ),
    "bias breaks a tie": (
        Routing(4, 1, SIGMOID),
        [1.0, 1.0, 1.0, 1.0],
        [0.0, 0.0, 0.25, 0.0],
        [2],
    ),
}


@pytest.mark.parametrize("case", sorted(TIES))
def test_ties_go_to_the_lowest_index(kernels, case):
    routing, logits, bias, expected = TIES[case]
    logits = np.array([logits], np.float32)
    bias = None if bias is None else np.array(bias)
    want = route_ref(routing, logits, bias)
    assert want[0][0].tolist() == expected, "the reference disagrees with the rule"
    check(run(kernels, routing, logits, bias), want)


# ---- against transformers ------------------------------------------------------------------

HIDDEN = 48


def hf_router(arch, n_experts, top_k, norm_topk_prob=False):
    """A transformers router module with random weights, and the routing it implements."""
    if arch == "mixtral":
        config = MixtralConfig(
            hidden_size=HIDDEN, num_local_experts=n_experts, num_experts_per_tok=top_k
        )
        return MixtralTopKRouter(config), Routing(n_experts, top_k, renormalize=True)
    classes = {
        "qwen2_moe": (Qwen2MoeConfig, Qwen2MoeTopKRouter),
        "qwen3_moe": (Qwen3MoeConfig, Qwen3MoeTopKRouter),
        "olmoe": (OlmoeConfig, OlmoeTopKRouter),
    }
    config_class, router_class = classes[arch]
    config = config_class(
        hidden_size=HIDDEN,
        num_experts=n_experts,
        num_experts_per_tok=top_k,
        norm_topk_prob=norm_topk_prob,
    )
    return router_class(config), Routing(n_experts, top_k, renormalize=norm_topk_prob)


def deepseek_router(n_experts, top_k, n_group, topk_group, norm_topk_prob, scale):
    config = DeepseekV3Config(
        hidden_size=HIDDEN,
        n_routed_experts=n_experts,
        num_experts_per_tok=top_k,
        n_group=n_group,
        topk_group=topk_group,
        norm_topk_prob=norm_topk_prob,
        routed_scaling_factor=scale,
    )
    router = DeepseekV3TopkRouter(config)
    with torch.no_grad():
        router.e_score_correction_bias.copy_(torch.randn(n_experts, dtype=torch.float64) * 0.05)
    routing = Routing(n_experts, top_k, SIGMOID, norm_topk_prob, n_group, topk_group, scale)
    return router, routing


HF_CASES = {  # name: (router factory, n_tokens)
    "mixtral 8 top-2": (lambda: hf_router("mixtral", 8, 2), 6),
    "qwen2_moe 60 top-4 unrenormalised": (lambda: hf_router("qwen2_moe", 60, 4), 4),
    "qwen2_moe 12 top-3 renormalised": (lambda: hf_router("qwen2_moe", 12, 3, True), 4),
    "qwen3_moe 128 top-8 renormalised": (lambda: hf_router("qwen3_moe", 128, 8, True), 3),
    "qwen3_moe 10 top-2 unrenormalised": (lambda: hf_router("qwen3_moe", 10, 2), 4),
    "olmoe 64 top-8 unrenormalised": (lambda: hf_router("olmoe", 64, 8), 3),
    "olmoe 9 top-3 renormalised": (lambda: hf_router("olmoe", 9, 3, True), 4),
    "deepseek_v3 256 top-8, 8 groups keep 4": (lambda: deepseek_router(256, 8, 8, 4, True, 2.5), 2),
    "deepseek_v3 24 top-3, 4 groups keep 2, unrenormalised": (
        lambda: deepseek_router(24, 3, 4, 2, False, 1.5),
        4,
    ),
}


def hf_route(router, hidden):
    """(logits, ids, weights) as the module returns them (DeepSeek-V3's are in no particular
    order: its top-k uses sorted=False)."""
    with torch.no_grad():
        logits, weights, ids = router(torch.tensor(hidden))
    return logits.numpy(), ids.numpy(), weights.numpy()


def by_id(ids, weights):
    order = np.argsort(ids, axis=-1)
    return np.take_along_axis(ids, order, -1), np.take_along_axis(weights, order, -1)


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_router_matches_transformers(kernels, case):
    factory, n_tokens = HF_CASES[case]
    torch.manual_seed(5)
    router, routing = factory()
    with torch.no_grad():
        router.weight.normal_(0.0, 0.3)
    bias = getattr(router, "e_score_correction_bias", None)
    bias = None if bias is None else bias.numpy().astype(np.float64)
    hidden = RNG.standard_normal((8 * n_tokens, HIDDEN)).astype(np.float32)
    logits, ids, weights = hf_route(router, hidden)
    keep = np.flatnonzero(separated(routing, logits, bias))[:n_tokens]
    assert keep.size == n_tokens, "too few well-separated tokens: draw more"
    logits, ids, weights = logits[keep], ids[keep], weights[keep]
    # The reference is transformers' routing (checked here), so the GPU is checked against both.
    want = route_ref(routing, logits, bias)
    if routing.scoring == SIGMOID:
        ids, weights = by_id(ids, weights)
        check(by_id(*want), (ids, weights))
        check(by_id(*run(kernels, routing, logits, bias)), (ids, weights))
    else:
        check(want, (ids, weights))
        check(run(kernels, routing, logits, bias), (ids, weights))


# ---- planted bugs --------------------------------------------------------------------------

GROUPED = Routing(24, 4, SIGMOID, True, n_group=6, topk_group=2, scale=2.5)
PLANTED_BUGS = {  # name: (good, bad, routing)
    "renormalisation skipped": (
        "if (params.renormalize == 1u)",
        "if (false)",
        Routing(8, 2, renormalize=True),
    ),
    "unrenormalised softmax over the chosen only": (
        "denominator = all_sum;",
        "denominator = chosen_sum;",
        Routing(60, 4),
    ),
    "bias in the weights": (
        "params.scale * raw_weight(logits[row + e], m)",
        "params.scale * keys[e]",
        GROUPED,
    ),
    "bias ignored in selection": ("sigmoid(l) + bias[e]", "sigmoid(l) + 0.0 * bias[e]", GROUPED),
    "group score is the top-1": ("return first + second;", "return first;", GROUPED),
    "group score is the top-2 without ordering": (
        "if (second > first) {",
        "if (false) {",
        GROUPED,
    ),
    "groups not limited": (
        "keep = rank < params.topk_group;",
        "keep = true;",
        GROUPED,
    ),
    "one group too many": (
        "keep = rank < params.topk_group;",
        "keep = rank <= params.topk_group;",
        GROUPED,
    ),
    "sigmoid off by 1e-4": (
        "1.0 / (1.0 + exp(-v))",
        "1.0 / (1.0001 + exp(-v))",
        Routing(24, 4, SIGMOID),
    ),
    "routed scaling ignored": ("params.scale * raw_weight", "raw_weight", GROUPED),
    "softmax without max subtraction on large logits": (
        "exp(l - m)",
        "exp(l)",
        Routing(8, 2, renormalize=False),
    ),
}


@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_bugs_fail_the_comparison(kernels, bug):
    good, bad, routing = PLANTED_BUGS[bug]
    source = shader_source("router.wgsl")
    assert good in source, "the planted bug no longer applies: update the control"
    bias = RNG.standard_normal(routing.n_experts) * 0.5 if routing.scoring == SIGMOID else None
    logits = random_logits(routing, 20, bias=bias)
    if "large logits" in bug:
        logits += 100.0  # softmax is shift-invariant; exp(l) alone overflows float32
    got = run(kernels, routing, logits, bias, source=source.replace(good, bad))
    with pytest.raises(AssertionError):
        check(got, route_ref(routing, logits, bias))


def test_planted_tie_rule_fails_the_tie_test(kernels):
    source = shader_source("router.wgsl").replace(
        "a_key == b_key && a < b", "a_key == b_key && a > b"
    )
    routing, logits, _, expected = TIES["equal logits: lowest index first"]
    got = run(kernels, routing, np.array([logits], np.float32), source=source)
    assert got[0][0].tolist() != expected


def test_reference_controls():
    """The tie filter and the reference's own group rule are not vacuous."""
    routing = replace(GROUPED, n_group=1, topk_group=1)
    logits = random_logits(GROUPED, 20, bias=np.zeros(24))
    assert (route_ref(routing, logits)[0] != route_ref(GROUPED, logits)[0]).any()
    tied = np.array([[1.0, 1.0, 0.0, -1.0]], np.float32)
    assert not separated(Routing(4, 1), tied).any()
