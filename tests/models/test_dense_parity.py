"""Dense models in the browser match transformers: logits at every position, greedy tokens.

Tiny random models (std 0.1 weights) of Llama (plain and Llama-3 rope scaling), Qwen2 (q/k/v
bias) and Gemma 3 (sliding/global layers, q/k norms, post-norms, GeGLU, embedding scale).
The tolerance is shown to catch a deliberately broken RoPE.
"""

from __future__ import annotations

import pytest

from harness.browser import run_async
from harness.parity import (
    LONG_PROMPT,
    PROMPT,
    REMAINDER_PROMPT,
    RTOL,
    browser_logits,
    max_relative_error,
    parity_error,
)
from harness.tiny_models import (
    CONFIGS,
    DENSE,
    reference_chat_ids,
    reference_greedy,
    reference_logits,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.mark.parametrize("name", DENSE)
def test_logits_match_transformers(app, model_server, tiny_models, name):
    assert parity_error(app, model_server, tiny_models[name], name, PROMPT) < RTOL


PASS_PLANS = {  # (prompt, prefillTokens): the passes logits() runs (contextLength 64)
    # the long plan clamped to the context (64): one pass, padded
    "one padded long pass": (LONG_PROMPT, None),
    # only the short plan: a pass of 32, then a padded one of 9 tokens
    "short pass, padded short pass": (LONG_PROMPT, 32),
    # a pass of 32, then single-token passes for a remainder too short to pad
    "short pass, single tokens": (REMAINDER_PROMPT, 32),
    # a long pass of 40, then a remainder (10) under half of one: a padded short pass
    "long pass, padded short pass": (LONG_PROMPT[:40] + PROMPT, 40),
}


@pytest.mark.parametrize("plan", sorted(PASS_PLANS))
@pytest.mark.parametrize("name", ["gemma3", "qwen2"])
def test_long_prompt_logits_match_transformers(app, model_server, tiny_models, name, plan):
    """Prompts longer than one prefill pass run the prefill products (the down projection's
    K split in two slices, summed by gemma3's post-norm and qwen2's residual add) and prefill
    attention over every mix of long, short, padded and single-token passes; the head runs
    on each prefill pass's hidden states."""
    prompt, prefill_tokens = PASS_PLANS[plan]
    error = parity_error(app, model_server, tiny_models[name], name, prompt, prefill_tokens)
    assert error < RTOL


# embed + per layer + LM head + 2 to sample (greedy: candidates, then the choice). Per layer:
# qkv, split, combine, o, gate_up, down; qwen2 adds 3 biases and rope_store (no cache writes
# from the projection with biases); gemma3 rope_store (its k norm) and two post-norms.
PER_LAYER = {"llama": 6, "llama3_scaled": 6, "qwen2": 10, "gemma3": 9}
DECODE_DISPATCHES = {
    name: 4 + CONFIGS[name]["num_hidden_layers"] * count for name, count in PER_LAYER.items()
}


def generate(app, url: str, options: dict) -> dict:
    """The ``done`` event of 16 tokens generated after PROMPT with ``options``."""
    return run_async(
        app,
        """
        const [url, ids, options] = args;
        await doppler.load(url, {contextLength: 64});
        let done = null;
        for await (const e of doppler.generate({tokenIds: ids}, {maxTokens: 16, ...options}))
          if (e.type === 'done') done = e;
        return done;
        """,
        url,
        PROMPT,
        options,
    )


@pytest.mark.parametrize("name", DENSE)
def test_greedy_continuation_matches_transformers(app, model_server, tiny_models, name):
    result = generate(app, f"{model_server}{name}/manifest.json", {"temperature": 0})
    assert result["tokenIds"] == reference_greedy(tiny_models[name], PROMPT, 16)
    assert result["finishReason"] == "length"
    assert result["stats"]["promptTokens"] == len(PROMPT)
    # the fused decode kernels ran: q/k/v in one dispatch, gate/up in another
    assert result["stats"]["dispatchesPerToken"] == DECODE_DISPATCHES[name]


@pytest.mark.parametrize(
    "options",
    [{"temperature": 0.8, "topK": 1}, {"temperature": 0.8, "topP": 1e-6}],
    ids=["two-stage sampler", "full sampler"],
)
def test_sampling_that_keeps_one_token_is_greedy(app, model_server, tiny_models, options):
    """Top-k 1 (the candidates path) and a tiny top-p (the full-vocabulary path) keep only
    the top token: their draws are transformers' greedy tokens."""
    result = generate(app, f"{model_server}llama/manifest.json", options)
    assert result["tokenIds"] == reference_greedy(tiny_models["llama"], PROMPT, 16)


def test_tolerance_catches_a_broken_rope(app, model_server, tiny_models):
    ours = browser_logits(app, f"{model_server}llama-broken-rope/manifest.json", PROMPT)
    theirs = reference_logits(tiny_models["llama"], PROMPT)
    error = max_relative_error(ours, theirs)
    print(f"broken rope: max relative logit error {error:.2e}")
    assert error > 10 * RTOL
    # Position 0 has no rotation at all, so the bug shows only from position 1 on.
    assert max_relative_error(ours[:1], theirs[:1]) < RTOL


def test_chat_renders_tokenizes_and_generates_like_transformers(app, model_server, tiny_models):
    """The whole chat path on a model with a real tokenizer.json and chat template."""
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there! How are you today?"},
    ]
    prompt = reference_chat_ids(tiny_models["llama_chat"], messages)
    result = run_async(
        app,
        """
        const [url, messages] = args;
        await doppler.load(url, {contextLength: 128});
        let text = '';
        let done = null;
        for await (const e of doppler.chat(messages, {maxTokens: 12, temperature: 0})) {
          if (e.type === 'delta') text += e.text;
          else done = e;
        }
        return {text, done};
        """,
        f"{model_server}llama_chat/manifest.json",
        messages,
    )
    done = result["done"]
    assert done["stats"]["promptTokens"] == len(prompt)
    expected = reference_greedy(tiny_models["llama_chat"], prompt, len(done["tokenIds"]))
    assert done["tokenIds"] == expected
    assert result["text"] == done["text"]
