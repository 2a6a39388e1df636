"""Shard packing: alignment, shard limit, dense/expert separation, expert contiguity."""

from __future__ import annotations

import itertools

import pytest

from doppler.format.plan import Plan, TensorSpec, make_plan

MAX = 64 * 1024  # small shards so a handful of tensors exercises every rule


def _spec(name: str, nbytes: int) -> TensorSpec:
    return TensorSpec(name, "f32", (nbytes // 4,), nbytes)


def _model() -> list[TensorSpec]:
    specs = [_spec("embed.weight", 3 * MAX + 1000), _spec("output_norm.weight", 1000)]
    for layer in range(3):
        specs += [
            _spec(f"layers.{layer}.attn.q.weight", 5000),
            _spec(f"layers.{layer}.router.weight", 300),
        ]
        for expert in range(5):
            size = 2 * MAX if (layer, expert) == (1, 2) else 9000  # one expert > a shard
            specs += [
                _spec(f"layers.{layer}.experts.{expert}.ffn.{p}.weight", size // 3 + 4)
                for p in ("gate", "up", "down")
            ]
    return specs


@pytest.fixture(scope="module")
def plan() -> Plan:
    return make_plan(_model(), 3, max_shard=MAX, block_size=4096, index_budget=10**9)


def test_alignment_and_limits(plan: Plan) -> None:
    for shard in plan.shards:
        assert 0 < shard.size <= MAX
        for piece in shard.pieces:
            assert piece.offset % 256 == 0
        ends = sorted((p.offset, p.offset + p.size) for p in shard.pieces)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(ends))
    for name, spans in plan.spans.items():
        assert sum(s[2] for s in spans) == plan.specs[name].nbytes
        assert all(s[2] % 256 == 0 for s in spans[:-1])


def test_big_tensor_spans_shards(plan: Plan) -> None:
    spans = plan.spans["embed.weight"]
    assert len(spans) == 4 and [s[1] for s in spans[1:]] == [0, 0, 0]


def test_small_tensors_never_straddle(plan: Plan) -> None:
    for name, spans in plan.spans.items():
        if plan.specs[name].nbytes <= MAX and ".1.experts.2." not in name:
            assert len(spans) == 1, name  # (expert 1.2 is bigger than a shard: it may split)


def test_dense_and_expert_separation(plan: Plan) -> None:
    for shard in plan.shards:
        experts = {p.tensor.split(".experts.")[0] for p in shard.pieces if ".experts." in p.tensor}
        dense = [p.tensor for p in shard.pieces if ".experts." not in p.tensor]
        assert not (experts and dense)
        assert len(experts) <= 1  # one layer per expert shard
        assert shard.kind == ("expert" if experts else "dense")


def test_experts_contiguous_and_whole(plan: Plan) -> None:
    for (layer, expert), spans in plan.expert_spans.items():
        names = [f"layers.{layer}.experts.{expert}.ffn.{p}.weight" for p in ("gate", "up", "down")]
        if (layer, expert) == (1, 2):
            assert len(spans) == 3 and spans[0][1] == 0  # bigger than a shard: starts fresh
        else:
            assert len(spans) == 1
        _shard, start, size = spans[0]
        for name in names:
            for s, off, n in plan.spans[name]:
                assert any(s == es and eo <= off and off + n <= eo + en for es, eo, en in spans)
        if len(spans) == 1:
            assert start + size <= MAX


def test_index_groups_partition_layers_and_shards() -> None:
    plan = make_plan(_model(), 3, max_shard=MAX, block_size=4096, index_budget=1)
    assert [g.layers for g in plan.groups] == [(0, 0), (1, 1), (2, 2)]
    assert plan.groups[0].globals and not plan.groups[1].globals
    owned = [i for g in plan.groups for i in g.shards]
    assert sorted(owned) == list(range(len(plan.shards)))
    for g_index, group in enumerate(plan.groups):
        assert all(plan.shards[i].group == g_index for i in group.shards)
