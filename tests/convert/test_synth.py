"""synth: deterministic random models, and the DeepSeek-V3 scale bounds of the format."""

from __future__ import annotations

import json
from math import prod
from pathlib import Path

import pytest

from doppler.convert.synth import synth
from doppler.convert.verify import verify_model
from doppler.format.canonical import layer_tensors
from doppler.format.index import parse_index
from doppler.format.manifest import model_id, parse_manifest

KIB, MIB = 1024, 1024 * 1024


def test_deepseek_v3_plan_meets_the_bounds(tmp_path: Path, capsys) -> None:
    out = synth("deepseek-v3", tmp_path / "ds", plan_only=True, progress=False)
    root = (out / "manifest.json").read_bytes()
    manifest = parse_manifest(root)
    cfg = manifest.config
    assert (cfg.num_layers, cfg.moe.num_experts, cfg.moe.num_shared_experts) == (61, 256, 1)
    assert cfg.moe.first_k_dense == 3
    index_sizes = [ref.size for ref in manifest.index]
    # Resolve one routed expert of a late MoE layer: root -> exactly one index shard.
    layer, expert = 57, 200
    ref = manifest.index_for_layer(layer)
    index = parse_index((out / f"{ref.name}.bin").read_bytes(), ref.name, cfg)
    entry = index.experts[(layer, expert)]
    blocks = [b for span in entry.spans for b in index.blocks_for(span)]
    mtp = sum(prod(shape) for shape in layer_tensors(cfg, cfg.num_layers).values())
    with capsys.disabled():
        print(
            f"\nDeepSeek-V3 plan: {(manifest.param_count - mtp) / 1e9:.1f}B params + "
            f"{mtp / 1e9:.1f}B MTP, {manifest.bits_per_weight:.3f} bits/weight, "
            f"{manifest.total_size / 2**30:.1f} GiB in {manifest.shard_count} files; root "
            f"manifest {len(root) / KIB:.1f} KiB; {len(index_sizes)} index shards, largest "
            f"{max(index_sizes) / KIB:.1f} KiB; expert ({layer},{expert}): 1 index fetch of "
            f"{ref.size / KIB:.1f} KiB -> {len(entry.spans)} range(s) "
            f"{sum(s.size for s in entry.spans) / MIB:.1f} MiB, {len(blocks)} block hashes"
        )
    assert len(root) < 256 * KIB
    assert max(index_sizes) <= 1 * MIB
    assert len(entry.spans) == 1 and len(blocks) >= 20
    assert 665e9 < manifest.param_count - mtp < 675e9 and 4.4 < manifest.bits_per_weight < 4.6
    verify_model(out, weights=False)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(
        json.dumps(
            {
                "model_type": "qwen3_moe",
                "vocab_size": 256,
                "hidden_size": 64,
                "intermediate_size": 128,
                "moe_intermediate_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "head_dim": 16,
                "num_experts": 8,
                "num_experts_per_tok": 2,
                "norm_topk_prob": True,
            }
        )
    )
    return path


def test_synth_is_deterministic_and_verifies(tiny_config: Path, tmp_path: Path) -> None:
    ids = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = synth(str(tiny_config), tmp_path / name, seed=seed, progress=False)
        verify_model(out)
        ids.append(model_id((out / "manifest.json").read_bytes()))
    assert ids[0] == ids[1] != ids[2]


def test_reduced_preset_with_weights(tmp_path: Path) -> None:
    out = synth("smollm2-135m", tmp_path / "s", layers=2, quant="q8_0", progress=False)
    manifest = verify_model(out).manifest
    assert manifest.config.num_layers == 2 and "q8_0" in manifest.layouts
