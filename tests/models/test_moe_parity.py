"""MoE models in the browser match transformers, all experts resident on the GPU.

Tiny random Mixtral (8 experts, top-2, renormalised), OLMoE (q/k norm over the whole
projection, unrenormalised top-2), Qwen2-MoE (top-4 unrenormalised plus a sigmoid-gated
shared expert) and Qwen3-MoE (per-head q/k norms, renormalised top-2). The tolerance is shown
to catch a wrong expert choice: transformers with two router rows of one layer swapped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.browser import run_async
from harness.parity import (
    LONG_PROMPT,
    PROMPT,
    RTOL,
    browser_logits,
    max_relative_error,
    parity_error,
)
from harness.tiny_models import MOE, reference_greedy, reference_logits

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def generate(app, url: str, ids: list[int], count: int) -> dict:
    return run_async(
        app,
        """
        const [url, ids, count] = args;
        const info = await doppler.load(url, {contextLength: 64});
        let done = null;
        for await (const e of doppler.generate({tokenIds: ids}, {maxTokens: count}))
          if (e.type === 'done') done = e;
        return {info, done};
        """,
        url,
        ids,
        count,
    )


@pytest.mark.parametrize("name", MOE)
def test_logits_match_transformers(app, model_server, tiny_models, name):
    assert parity_error(app, model_server, tiny_models[name], name, PROMPT) < RTOL


@pytest.mark.parametrize("name", MOE)
def test_long_prompt_logits_match_transformers(app, model_server, tiny_models, name):
    """A full prefill pass: its tokens' experts run grouped by expert."""
    assert parity_error(app, model_server, tiny_models[name], name, LONG_PROMPT) < RTOL


@pytest.mark.parametrize("prompt", [PROMPT, LONG_PROMPT], ids=["short", "long"])
def test_long_prompt_generation_skips_nothing_it_needs(app, model_server, tiny_models, prompt):
    """Generation's prefill passes leave out the LM head (only the last prompt token's
    logits matter, and the sampled pass computes those): the tokens must not change."""
    result = generate(app, f"{model_server}mixtral/manifest.json", prompt, 8)
    assert result["done"]["tokenIds"] == reference_greedy(tiny_models["mixtral"], prompt, 8)


@pytest.mark.parametrize("name", MOE)
def test_greedy_continuation_matches_transformers(app, model_server, tiny_models, name):
    result = generate(app, f"{model_server}{name}/manifest.json", PROMPT, 16)
    assert result["done"]["tokenIds"] == reference_greedy(tiny_models[name], PROMPT, 16)
    experts = result["info"]["experts"]
    assert experts["resident"] and experts["resident_experts"] == experts["total_experts"]
    paging = result["done"]["stats"]["paging"]
    assert paging["gpu_misses"] == paging["bytes_uploaded"] == paging["network_fetches"] == 0


def swapped_router(model: Path, out: Path, layer: int, a: int, b: int) -> Path:
    """The same HF model with router rows ``a`` and ``b`` of ``layer`` swapped: tokens that
    chose expert ``a`` now run ``b`` (with a's weight) and the other way round."""
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    gate = hf.model.layers[layer].mlp.gate.weight
    with torch.no_grad():
        gate[[a, b]] = gate[[b, a]].clone()
    hf.save_pretrained(out)
    return out


def test_tolerance_catches_a_wrong_expert_choice(app, model_server, tiny_models, tmp_path):
    ours = browser_logits(app, f"{model_server}mixtral/manifest.json", PROMPT)
    wrong = reference_logits(
        swapped_router(tiny_models["mixtral"], tmp_path / "w", 1, 0, 1), PROMPT
    )
    right = reference_logits(tiny_models["mixtral"], PROMPT)
    error = max_relative_error(ours, wrong)
    print(f"wrong expert choice: max relative logit error {error:.2e}")
    assert max_relative_error(ours, right) < RTOL < error / 10
    assert not np.allclose(wrong, right)
