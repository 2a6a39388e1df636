"""``doppler synth --like X OUT``: a model of real shapes with seeded random weights.

For benchmarks and scale tests. Each tensor's values come from its own generator, seeded
by (seed, tensor name), so output is deterministic and independent of packing order.
``plan_only`` writes just the root manifest and index shards (stand-in shard hashes), so
even a 671B-parameter layout can be planned and measured without any weights.
"""

import dataclasses
import hashlib
from math import prod
from pathlib import Path

import numpy as np

from doppler.convert import pack
from doppler.convert.hf_source import config_from_hf, read_json
from doppler.convert.verify import verify_model
from doppler.convert.writer import Loader, ModelInfo, SourceTensor, write_model
from doppler.format.canonical import expected_tensors
from doppler.format.config import ArchConfig
from doppler.format.errors import MissingFileError, SchemaError
from doppler.format.plan import BLOCK_SIZE

_GEMMA3_1B = {
    "model_type": "gemma3_text",
    "vocab_size": 262144,
    "hidden_size": 1152,
    "intermediate_size": 6912,
    "num_hidden_layers": 26,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 512,
    "sliding_window_pattern": 6,
    "rope_theta": 1000000.0,
    "rope_local_base_freq": 10000.0,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "hidden_activation": "gelu_pytorch_tanh",
    "tie_word_embeddings": True,
}
_LLAMA32_1B = {
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "rope_theta": 500000.0,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "tie_word_embeddings": True,
}
_SMOLLM2_135M = {
    "model_type": "llama",
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "rope_theta": 100000.0,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}
_MIXTRAL_8X7B = {
    "model_type": "mixtral",
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
_QWEN3_MOE = {  # Qwen3-30B-A3B
    "model_type": "qwen3_moe",
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "norm_topk_prob": True,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
_DEEPSEEK_V3 = {
    "model_type": "deepseek_v3",
    "vocab_size": 129280,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_experts_per_tok": 8,
    "n_group": 8,
    "topk_group": 4,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
    "norm_topk_prob": True,
    "first_k_dense_replace": 3,
    "moe_layer_freq": 1,
    "q_lora_rank": 1536,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "num_nextn_predict_layers": 1,
    "rope_theta": 10000.0,
    "rope_scaling": {
        "type": "yarn",
        "factor": 40.0,
        "original_max_position_embeddings": 4096,
        "beta_fast": 32,
        "beta_slow": 1,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    },
    "max_position_embeddings": 163840,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
PRESETS = {
    "gemma-3-1b": _GEMMA3_1B,
    "llama-3.2-1b": _LLAMA32_1B,
    "smollm2-135m": _SMOLLM2_135M,
    "mixtral-8x7b": _MIXTRAL_8X7B,
    "qwen3-moe": _QWEN3_MOE,
    "deepseek-v3": _DEEPSEEK_V3,
}
LAYOUT_CHOICES = ("q4_0", "q8_0", "f16", "bf16", "f32")
CHUNK_ROWS = 1024


def synth_config(like: str, layers: int | None = None) -> ArchConfig:
    """The preset's (or a config.json's) architecture, optionally cut to ``layers`` layers."""
    if like in PRESETS:
        cfg = config_from_hf(PRESETS[like])
    elif Path(like).is_file():
        cfg = config_from_hf(read_json(Path(like)))
    else:
        raise MissingFileError(
            f"--like {like!r}: not a preset ({', '.join(PRESETS)}) nor a config.json file"
        )
    if layers is None:
        return cfg
    if not 1 <= layers <= cfg.num_layers:
        raise SchemaError(f"--layers {layers}: must be in [1, {cfg.num_layers}]")
    return dataclasses.replace(cfg, num_layers=layers, layer_types=cfg.layer_types[:layers])


def layout_for(name: str, shape: tuple[int, ...], quant: str) -> str:
    """Norms and vectors f32; routers bf16 (never quantized); matrices ``quant`` when their
    rows split into 32-weight blocks, else f16."""
    if len(shape) == 1:
        return "f32"
    if name.endswith(("router.weight", "shared.gate.weight")):
        return "bf16"
    if quant in ("q4_0", "q8_0") and shape[-1] % 32:
        return "f16"
    return quant


def synth_tensors(cfg: ArchConfig, quant: str = "q4_0", seed: int = 0) -> list[SourceTensor]:
    return [
        SourceTensor(
            name,
            layout_for(name, shape, quant),
            shape,
            _generator(name, shape, layout_for(name, shape, quant), seed, cfg.norm.weight_offset),
        )
        for name, shape in expected_tensors(cfg).items()
    ]


def _generator(name: str, shape: tuple[int, ...], layout: str, seed: int, offset: float) -> Loader:
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    rows, row_len = prod(shape[:-1]), shape[-1]

    def normal(lo: int, hi: int) -> np.ndarray:
        """Rows lo..hi of the tensor's N(0, 1) draw, generated in fixed row chunks so the
        values do not depend on how the writer splits the tensor."""
        first, last = lo // CHUNK_ROWS, -(-hi // CHUNK_ROWS)
        chunks = [
            np.random.default_rng([seed, key, c]).standard_normal(
                (min(CHUNK_ROWS, rows - c * CHUNK_ROWS), row_len), dtype=np.float32
            )
            for c in range(first, last)
        ]
        return np.concatenate(chunks)[lo - first * CHUNK_ROWS : hi - first * CHUNK_ROWS]

    def load(lo: int, hi: int) -> tuple[str, np.ndarray]:
        values = normal(lo, hi)
        if name.endswith("norm.weight"):
            values = (1.0 - offset) + 0.05 * values
        elif name == "rope_freqs.weight":
            values = np.ones_like(values)
        else:
            values *= 0.02
        if layout in ("q4_0", "q8_0"):
            return pack.quantize(values, layout)
        if layout == "bf16":
            bits = values.view(np.uint32)
            rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            return pack.pack_float(rounded.astype(np.uint16), "bf16")
        return pack.pack_float(values.astype(np.float16 if layout == "f16" else np.float32), layout)

    return load


def synth(
    like: str,
    out: Path,
    *,
    plan_only: bool = False,
    seed: int = 0,
    layers: int | None = None,
    quant: str = "q4_0",
    mirrors: tuple[str, ...] = (),
    progress: bool = True,
    block_size: int = BLOCK_SIZE,
) -> Path:
    cfg = synth_config(like, layers)
    label = like if like in PRESETS else Path(like).parent.name or "config"
    info = ModelInfo(
        name=f"synth {label}",
        source=f"synth:{label} seed={seed} layers={cfg.num_layers} quant={quant}"
        + (" plan-only" if plan_only else ""),
        config=cfg,
        tokenizer=None,
        mirrors=mirrors,
    )

    def check(tmp: Path) -> object:
        return verify_model(tmp, weights=not plan_only)

    return write_model(
        Path(out),
        info,
        synth_tensors(cfg, quant, seed),
        plan_only=plan_only,
        progress=progress,
        verify=check,
        block_size=block_size,
    )
