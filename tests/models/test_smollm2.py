"""SmolLM2-135M-Instruct end to end in headless Chromium against transformers.

The oracle is transformers reading the same GGUF (dequantized to float32); prompts are
tokenized by our tokenizer, which tests/tokenizer checks against llama.cpp. Greedy
continuations must be identical for 32 tokens unless transformers itself sees a near-tie.
"""

from __future__ import annotations

import math
from pathlib import Path

import build
import numpy as np
import pytest
from tools.static_server import serving

from doppler.tokenizer import Tokenizer
from doppler.tokenizer.spec import from_gguf_metadata, gguf_fields
from harness.browser import run_async

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
]
PARAGRAPH = (
    "The sun rose over the quiet village, and the baker opened his shop. Children ran to "
    "school while their parents walked to the market to buy bread, milk and fresh fruit."
)
NEW_TOKENS = 32
NEAR_TIE = 0.05  # logit margin between transformers' top two below which order may flip


@pytest.fixture(scope="module")
def smollm2_url(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("smollm2")
    build.add_default_model(root)
    with serving(root) as url:
        yield f"{url}models/{build.DEFAULT_MODEL}/manifest.json"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_spec(from_gguf_metadata(gguf_fields(build.smollm2_gguf())))


@pytest.fixture(scope="module")
def reference():
    import torch
    from transformers import AutoModelForCausalLM

    path = build.smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(
        Path(path).parent, gguf_file=path.name, dtype=torch.float32
    )
    model.eval()

    def logits(ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].double().numpy()

    return logits


@pytest.fixture(scope="module")
def loaded(app, smollm2_url):
    return run_async(app, "return await doppler.load(args[0], {contextLength: 160});", smollm2_url)


def test_greedy_continuations_match_transformers(app, loaded, tokenizer, reference):
    assert loaded["arch"] == "llama" and loaded["hasTokenizer"]
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        done = run_async(
            app,
            """
            let done = null;
            for await (const e of doppler.generate({tokenIds: args[0]},
                {maxTokens: args[1], temperature: 0})) if (e.type === 'done') done = e;
            return done;
            """,
            ids,
            NEW_TOKENS,
        )
        ours = done["tokenIds"]
        theirs = reference(ids + ours)[len(ids) - 1 :]
        for step, token in enumerate(ours):
            row = theirs[step]
            best = int(row.argmax())
            if token != best:
                margin = row[best] - row[token]
                assert margin < NEAR_TIE, f"{prompt!r}: step {step} chose {token}, not {best}"
                break
        else:
            assert len(ours) == NEW_TOKENS or ours[-1] in tokenizer.eos_ids
        print(f"{prompt!r} -> {tokenizer.decode(ours)!r}")


def test_perplexity_within_one_percent(app, loaded, tokenizer, reference):
    ids = tokenizer.encode(PARAGRAPH)
    ours = run_async(app, "return await doppler.score({tokenIds: args[0]});", ids)
    logits = reference(ids)[:-1]
    peak = logits.max(axis=1, keepdims=True)
    logprobs = logits - (peak + np.log(np.exp(logits - peak).sum(axis=1, keepdims=True)))
    theirs = math.exp(-logprobs[np.arange(len(ids) - 1), ids[1:]].mean())
    print(f"perplexity: ours {ours['perplexity']:.4f}, transformers {theirs:.4f}")
    assert abs(ours["perplexity"] / theirs - 1) < 0.01
