"""Tiny random HF models of every supported architecture convert; values survive exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rdrr_helpers import all_entries, manifest_of, read_tensor
from safetensors import safe_open

from doppler.convert import pack
from doppler.convert.convert import convert
from doppler.convert.naming import hf_name

ARCHS = {
    "llama": "llama",
    "qwen2": "qwen2",
    "gemma3_text": "gemma3",
    "mixtral": "mixtral",
    "qwen2_moe": "qwen2_moe",
    "qwen3_moe": "qwen3_moe",
    "olmoe": "olmoe",
}
DTYPES = {"llama": "bfloat16", "qwen2": "float16"}  # the rest are float32


def _source_values(folder: Path, arch: str) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118
                name = hf_name(key, arch)
                if name is not None:
                    out[name] = fh.get_tensor(key).float().numpy()
    return out


@pytest.mark.parametrize("model_type", sorted(ARCHS))
def test_tiny_model_converts_exactly(tiny_hf, tmp_path: Path, model_type: str) -> None:
    folder = tiny_hf(model_type, DTYPES.get(model_type, "float32"))
    model = convert(folder, tmp_path / "out", progress=False)
    source = _source_values(folder, ARCHS[model_type])
    entries = all_entries(model)
    config = manifest_of(model)["config"]
    if config["tie_embeddings"]:
        source.pop("lm_head.weight", None)
    assert entries.keys() == source.keys()
    stored_dtype = {"bfloat16": "bf16", "float16": "f16"}.get(DTYPES.get(model_type), "f32")
    for name, values in source.items():
        layout, shape, data = read_tensor(model, name)
        assert layout == stored_dtype, name  # kept as stored, never widened
        assert np.array_equal(pack.dequantize(layout, data, shape), values), name
        assert values.std() > 0.05 or values.size == 1  # nothing near-flat


def test_architecture_specifics(tiny_hf, tmp_path: Path) -> None:
    def cfg(model_type: str) -> dict:
        folder = tiny_hf(model_type, DTYPES.get(model_type, "float32"))
        out = tmp_path / model_type
        return manifest_of(convert(folder, out, progress=False))["config"]

    llama = cfg("llama")
    assert llama["rope"]["scaling"]["type"] == "llama3" and llama["rope"]["style"] == "neox"
    gemma = cfg("gemma3_text")
    assert gemma["norm"]["weight_offset"] == 1.0 and gemma["attn_scale"] == 24**-0.5
    assert gemma["layer_types"] == ["sliding"] * 5 + ["full"]
    assert gemma["embedding_scale"] == pytest.approx(8.0)
    qwen2_moe = cfg("qwen2_moe")["moe"]
    assert qwen2_moe["shared_expert_gate"] and qwen2_moe["shared_intermediate_size"] == 64
    assert not qwen2_moe["renormalize"]
    assert cfg("qwen3_moe")["moe"]["renormalize"] and cfg("olmoe")["qk_norm"] == "full"
    assert cfg("qwen2")["qkv_bias"]


def test_sharded_safetensors(tiny_hf, tmp_path: Path) -> None:
    folder = tiny_hf("mixtral", "float32", shard_size="100KB")
    assert len(list(folder.glob("*.safetensors"))) > 1
    model = convert(folder, tmp_path / "out", progress=False)
    assert manifest_of(model)["config"]["moe"]["num_experts"] == 4


def test_quantize_option(tiny_hf, tmp_path: Path) -> None:
    folder = tiny_hf("llama", "bfloat16")
    model = convert(folder, tmp_path / "out", quant="q8_0", progress=False)
    source = _source_values(folder, "llama")
    for name in ("layers.0.attn.q.weight", "embed.weight"):
        layout, _, data = read_tensor(model, name)
        assert layout == "q8_0"
        assert np.array_equal(data, pack.quantize(source[name], "q8_0")[1])
    assert read_tensor(model, "layers.0.attn_norm.weight")[0] == "bf16"  # vectors untouched


def test_gguf_and_hf_paths_agree_on_llama_q_k(tiny_hf, tmp_path: Path) -> None:
    """A GGUF written the way llama.cpp writes Llama (q/k rows permuted) converts to the same
    stored tensors as the HF folder: the un-permute restores HF order exactly."""
    import gguf

    folder = tiny_hf("llama", "float32")
    source = _source_values(folder, "llama")
    config = manifest_of(convert(folder, tmp_path / "hf", progress=False))["config"]
    writer = gguf.GGUFWriter(tmp_path / "tiny.gguf", "llama")
    writer.add_block_count(2)
    writer.add_context_length(256)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(96)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    gguf_names = {
        "embed.weight": "token_embd.weight",
        "output_norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    parts = {
        "attn_norm": "attn_norm",
        "attn.q": "attn_q",
        "attn.k": "attn_k",
        "attn.v": "attn_v",
        "attn.o": "attn_output",
        "ffn_norm": "ffn_norm",
        "ffn.gate": "ffn_gate",
        "ffn.up": "ffn_up",
        "ffn.down": "ffn_down",
    }
    for name, values in source.items():
        if name.startswith("layers."):
            layer, rest = name.split(".", 2)[1:]
            gname = f"blk.{layer}.{parts[rest.removesuffix('.weight')]}.weight"
        else:
            gname = gguf_names[name]
        if ".attn.q." in name or ".attn.k." in name:
            heads = 4 if ".attn.q." in name else 2
            values = (
                values.reshape(heads, 2, -1, values.shape[-1]).swapaxes(1, 2).reshape(values.shape)
            )  # llama.cpp's permute
        writer.add_tensor(gname, np.ascontiguousarray(values))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    from_gguf = convert(tmp_path / "tiny.gguf", tmp_path / "gguf", progress=False)
    assert manifest_of(from_gguf)["config"]["rope"]["style"] == config["rope"]["style"] == "neox"
    for name in ("layers.0.attn.q.weight", "layers.1.attn.k.weight", "layers.0.attn.v.weight"):
        assert np.array_equal(
            read_tensor(from_gguf, name)[2], read_tensor(tmp_path / "hf", name)[2]
        ), name
