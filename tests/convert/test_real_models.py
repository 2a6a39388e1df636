"""SmolLM2 (Q4_1) and Gemma 3 270M (Q4_K_M) GGUFs convert exactly.

The oracle is the gguf package itself: GGUFReader's tensor table and gguf.quants.dequantize.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader
from gguf.quants import dequantize as gguf_dequantize
from rdrr_helpers import all_entries, manifest_of, read_tensor

from doppler.cli import main
from doppler.convert import pack
from doppler.convert.naming import gguf_name
from doppler.convert.verify import verify_model
from doppler.format.errors import HashMismatchError
from doppler.format.layouts import GGUF_LAYOUTS, LAYOUTS

pytestmark = pytest.mark.slow


def _llama_permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permute (HF rotate-half rows -> interleaved pairs),
    written independently here as the oracle for our un-permute."""
    return (
        rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
        .swapaxes(1, 2)
        .reshape(rows.shape)
    )


def _oracle(gguf_path: Path) -> dict[str, tuple[str, tuple[int, ...], object]]:
    """canonical name -> (GGUF type, logical shape, ReaderTensor) for non-merged tensors."""
    out = {}
    for t in GGUFReader(gguf_path).tensors:
        name, part = gguf_name(t.name)
        assert part is None  # neither real model is MoE
        out[name] = (t.tensor_type.name, pack.shape_from_ne(t.shape), t)
    return out


@pytest.fixture(scope="module")
def models(smollm2_model: Path, gemma_conversion: tuple[Path, dict], gemma_gguf: Path) -> dict:
    from rdrr_helpers import SMOLLM2

    return {"smollm2": (smollm2_model, SMOLLM2), "gemma": (gemma_conversion[0], gemma_gguf)}


@pytest.fixture(scope="module")
def oracles(models: dict) -> dict:
    """GGUFReader is slow on a 262k vocabulary: read each file once."""
    return {which: _oracle(src) for which, (_, src) in models.items()}


@pytest.mark.parametrize("which", ["smollm2", "gemma"])
def test_layouts_and_sizes_match_the_table(models: dict, oracles: dict, which: str) -> None:
    model = models[which][0]
    oracle = oracles[which]
    entries = all_entries(model)
    assert entries.keys() == oracle.keys()
    for name, entry in entries.items():
        gtype, shape, _ = oracle[name]
        assert entry.layout == GGUF_LAYOUTS[gtype], name  # nothing widened to f32
        assert entry.shape == shape and entry.nbytes == LAYOUTS[entry.layout].nbytes(shape)


@pytest.mark.parametrize("which", ["smollm2", "gemma"])
def test_dequantized_values_equal_gguf(models: dict, oracles: dict, which: str) -> None:
    model = models[which][0]
    oracle = oracles[which]
    config = manifest_of(model)["config"]
    by_type: dict[str, list[str]] = {}
    for name, (gtype, _, _) in oracle.items():
        by_type.setdefault(gtype, []).append(name)
    sample = {n for names in by_type.values() for n in names[:2] + names[-1:]}
    sample |= {"layers.1.attn.q.weight", "layers.1.attn.k.weight", "embed.weight"}
    for name in sorted(sample):
        gtype, shape, tensor = oracle[name]
        layout, stored_shape, data = read_tensor(model, name)
        ours = pack.dequantize(layout, data, stored_shape)
        want = gguf_dequantize(tensor.data, tensor.tensor_type).reshape(shape)
        if config["arch"] == "llama" and (".attn.q." in name or ".attn.k." in name):
            heads = config["num_heads"] if ".attn.q." in name else config["num_kv_heads"]
            ours = _llama_permute(ours, heads)  # we store HF order; GGUF is permuted
        assert np.array_equal(ours.view(np.uint32), want.astype(np.float32).view(np.uint32)), (
            f"{which} {name} ({gtype})"
        )
    print(f"\n{which}: {len(sample)} tensors of types {sorted(by_type)} bit-identical")


def test_the_comparison_catches_a_planted_byte(models: dict, oracles: dict) -> None:
    gtype, shape, tensor = oracles["gemma"]["layers.0.attn.o.weight"]
    layout, stored_shape, data = read_tensor(models["gemma"][0], "layers.0.attn.o.weight")
    planted = data.copy()
    planted[100] ^= 0x10
    ours = pack.dequantize(layout, planted, stored_shape)
    want = gguf_dequantize(tensor.data, tensor.tensor_type).reshape(shape)
    assert gtype == "Q4_K" and not np.array_equal(ours, want)


def test_gemma_config_records_gguf_conventions(models: dict) -> None:
    cfg = manifest_of(models["gemma"][0])["config"]
    assert cfg["norm"] == {"eps": pytest.approx(1e-6), "weight_offset": 0.0, "post_norms": True}
    assert cfg["layer_types"][:6] == ["sliding"] * 5 + ["full"] and cfg["sliding_window"] == 512
    assert cfg["rope"]["local_theta"] == 10000.0 and cfg["rope"]["theta"] == 1e6
    assert cfg["attn_scale"] == 256**-0.5 and cfg["qk_norm"] == "head"
    assert cfg["tie_embeddings"] and cfg["activation"] == "gelu_tanh"
    assert manifest_of(models["gemma"][0])["tokenizer"] is not None


def test_gemma_peak_memory_stays_near_a_few_shards(gemma_conversion: tuple[Path, dict]) -> None:
    stats = gemma_conversion[1]
    print(
        f"\nGemma 3 270M conversion: {stats['seconds']:.1f} s, peak RSS "
        f"{stats['peak_rss_mib']:.0f} MiB"
    )
    # 178 MB embedding + a 262k-token tokenizer, yet peak stays at about six 64 MiB shards.
    assert stats["peak_rss_mib"] < 450


def test_verify_catches_a_flipped_byte(models: dict, tmp_path: Path, capsys) -> None:
    model = shutil.copytree(models["smollm2"][0], tmp_path / "copy")
    assert main(["verify", str(model)]) == 0
    shard = max(model.glob("*.bin"), key=lambda p: p.stat().st_size)
    with shard.open("r+b") as fh:
        fh.seek(5_000_000)
        byte = fh.read(1)
        fh.seek(5_000_000)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(HashMismatchError, match="block 4 "):
        verify_model(model)
    capsys.readouterr()
    assert main(["verify", str(model)]) == 1
    assert "hash mismatch" in capsys.readouterr().err
