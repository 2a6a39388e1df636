"""What the parity tests share: the prompt, the tolerance, and how logits are compared."""

from __future__ import annotations

import numpy as np

from harness.browser import run_async
from harness.tiny_models import VOCAB, reference_logits

PROMPT = [3, 17, 99, 42, 5, 64, 7, 120, 33, 8]
LONG_PROMPT = [(37 * i + 11) % VOCAB for i in range(41)]
REMAINDER_PROMPT = LONG_PROMPT[:34]
RTOL = 1e-4  # max |ours - theirs| relative to max |theirs| per position


def browser_logits(app, url: str, ids: list[int], prefill_tokens: int | None = None):
    result = run_async(
        app,
        """
        const [url, ids, prefillTokens] = args;
        await doppler.load(url, {contextLength: 64, prefillTokens});
        return await doppler.score({tokenIds: ids, returnLogits: true});
        """,
        url,
        ids,
        prefill_tokens,
    )
    return np.array(result["logits"], dtype=np.float64)


def max_relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    scale = np.abs(theirs).max(axis=-1, keepdims=True)
    return float((np.abs(ours - theirs) / scale).max())


def parity_error(
    app,
    model_server: str,
    model_dir,
    name: str,
    prompt: list[int],
    prefill_tokens: int | None = None,
) -> float:
    """Max relative logit error, over every position of ``prompt``, of the served model
    ``name`` in the browser (loaded with ``prefill_tokens``) against transformers running
    ``model_dir``."""
    ours = browser_logits(app, f"{model_server}{name}/manifest.json", prompt, prefill_tokens)
    theirs = reference_logits(model_dir, prompt)
    assert ours.shape == theirs.shape == (len(prompt), VOCAB)
    error = max_relative_error(ours, theirs)
    print(f"{name}, {len(prompt)} tokens: max relative logit error {error:.2e}")
    return error
