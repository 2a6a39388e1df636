"""ArchConfig: strict JSON round trip and cross-field rules."""

from __future__ import annotations

import pytest

from doppler.convert.synth import PRESETS, synth_config
from doppler.format.config import ArchConfig
from doppler.format.errors import SchemaError


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_round_trip(preset: str) -> None:
    cfg = synth_config(preset)
    assert ArchConfig.from_json(cfg.to_json()) == cfg


def test_deepseek_config_carries_routing_and_mla() -> None:
    cfg = synth_config("deepseek-v3")
    moe, mla = cfg.moe, cfg.mla
    assert moe is not None and mla is not None
    assert (moe.scoring, moe.n_group, moe.topk_group, moe.routing_bias) == ("sigmoid", 8, 4, True)
    assert (moe.routed_scaling_factor, moe.num_shared_experts, moe.first_k_dense) == (2.5, 1, 3)
    assert (mla.q_lora_rank, mla.kv_lora_rank, mla.qk_rope_head_dim) == (1536, 512, 64)
    assert cfg.mtp_layers == 1 and cfg.rope.style == "interleaved"
    assert cfg.rope.scaling is not None and cfg.rope.scaling.type == "yarn"
    assert [cfg.is_moe_layer(i) for i in range(4)] == [False, False, False, True]


def test_gemma_records_norm_offset_and_layer_pattern() -> None:
    cfg = synth_config("gemma-3-1b")
    assert cfg.norm.weight_offset == 1.0 and cfg.norm.post_norms
    assert cfg.layer_types[:6] == ("sliding",) * 5 + ("full",)
    assert cfg.rope.local_theta == 10000.0 and cfg.attn_scale == 256**-0.5


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("hidden_size",), True, "expected an integer"),
        (("hidden_size",), -1, "outside"),
        (("num_layers",), 10**9, "outside"),
        (("activation",), "relu", "not one of"),
        (("rope", "style"), "spiral", "not one of"),
        (("norm", "eps"), "1e-6", "expected a number"),
        (("num_kv_heads",), 5, "must divide"),
        (("layer_types",), ["full"], "needs"),
    ],
)
def test_bad_values_are_named(path: tuple[str, ...], value: object, message: str) -> None:
    doc = synth_config("llama-3.2-1b").to_json()
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(SchemaError, match=message) as info:
        ArchConfig.from_json(doc)
    assert path[-1] in str(info.value)


def test_missing_and_unknown_fields() -> None:
    doc = synth_config("smollm2-135m").to_json()
    del doc["rope"]
    with pytest.raises(SchemaError, match="missing field 'rope'"):
        ArchConfig.from_json(doc)
    doc = synth_config("smollm2-135m").to_json()
    doc["rope"]["extra"] = 1
    with pytest.raises(SchemaError, match="unknown field 'extra'"):
        ArchConfig.from_json(doc)


def test_rope_scaling_needs_its_parameters() -> None:
    doc = synth_config("llama-3.2-1b").to_json()
    doc["rope"]["scaling"]["low_freq_factor"] = None
    with pytest.raises(SchemaError, match="required for rope scaling 'llama3'"):
        ArchConfig.from_json(doc)
    doc = synth_config("llama-3.2-1b").to_json()
    doc["rope"]["scaling"]["beta_fast"] = 32.0
    with pytest.raises(SchemaError, match="not used by rope scaling 'llama3'"):
        ArchConfig.from_json(doc)
