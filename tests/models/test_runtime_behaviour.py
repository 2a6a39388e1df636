"""Fallbacks and clear errors of the dense runtime, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest

from harness.browser import PageError, run_async
from harness.tiny_models import reference_greedy, reference_logits

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROMPT = [5, 9, 77, 3, 101, 64, 12, 7, 90, 2, 44]


@pytest.mark.parametrize(
    ("name", "limit", "subgroups"), [("gemma3", 8192, False), ("llama", 16384, True)]
)
def test_split_bindings_match_transformers(app, model_server, tiny_models, name, limit, subgroups):
    """A binding limit smaller than the embedding forces row-split weights, and smaller than
    a layer's q/k/v or gate/up together keeps them apart (unfused): prefill logits and greedy
    decode still match transformers, without subgroups (the fallback kernels) and with them
    (llama: k and v projected into the cache one dispatch each)."""
    result = run_async(
        app,
        """
        const [url, ids, limit, subgroups] = args;
        const { Doppler } = await import('./app/doppler.js');
        const limited = await Doppler.create({
          maxStorageBufferBindingSize: limit, disableFeatures: subgroups ? [] : ['subgroups'] });
        try {
          const info = await limited.load(url, {contextLength: 32});
          const scored = await limited.score({tokenIds: ids, returnLogits: true});
          let done = null;
          for await (const e of limited.generate({tokenIds: ids}, {maxTokens: 8})) done = e;
          return {info, logits: scored.logits, done, features: limited.status().gpu.features};
        } finally {
          limited.terminate();
        }
        """,
        f"{model_server}{name}/manifest.json",
        PROMPT,
        limit,
        subgroups,
    )
    assert ("subgroups" in result["features"]) == subgroups
    assert "embed.weight" in result["info"]["splitTensors"]  # 128 x 64 f32 = 32 KiB > 16 KiB
    ours = np.array(result["logits"])
    theirs = reference_logits(tiny_models[name], PROMPT)
    scale = np.abs(theirs).max(axis=-1, keepdims=True)
    assert float((np.abs(ours - theirs) / scale).max()) < 1e-4
    assert result["done"]["tokenIds"] == reference_greedy(tiny_models[name], PROMPT, 8)
    if subgroups:  # unfused: more than the fused 6 dispatches per layer (+ 4)
        assert result["done"]["stats"]["dispatchesPerToken"] > 4 + 2 * 6


def test_prompt_longer_than_the_context_is_refused(app, model_server):
    with pytest.raises(PageError) as info:
        run_async(
            app,
            """
            await doppler.load(args[0], {contextLength: 8});
            for await (const e of doppler.generate({tokenIds: args[1]}, {maxTokens: 4})) {}
            """,
            f"{model_server}llama/manifest.json",
            PROMPT,
        )
    assert info.value.code == "context_full"
    assert "11 tokens do not fit the context of 8" in info.value.message


@pytest.mark.parametrize("tokens", [1, 4096])
def test_prefill_tokens_out_of_range_is_refused(app, model_server, tokens):
    with pytest.raises(PageError) as info:
        run_async(
            app,
            "await doppler.load(args[0], {prefillTokens: args[1]});",
            f"{model_server}llama/manifest.json",
            tokens,
        )
    assert info.value.code == "bad_request"
    assert f"prefillTokens {tokens} is outside 2..1024" in info.value.message


def test_unknown_or_unsupported_architecture_is_named(app, model_server):
    with pytest.raises(PageError) as info:
        run_async(
            app, "await doppler.load(args[0]);", f"{model_server}llama-as-deepseek/manifest.json"
        )
    assert info.value.code == "unsupported_architecture"
    assert "'deepseek_v3'" in info.value.message


def test_generate_without_a_model_says_so(app):
    run_async(app, "await doppler.unload();")
    with pytest.raises(PageError) as info:
        run_async(app, "for await (const e of doppler.generate({tokenIds: [1, 2]})) {}")
    assert info.value.code == "no_model"


def test_decode_profile_times_every_kernel(app, model_server):
    """The timestamp-query profile that build.py bench reports (GPU ms per decode step)."""
    result = run_async(
        app,
        """
        await doppler.load(args[0], {contextLength: 32});
        for await (const e of doppler.generate({tokenIds: [1, 2, 3]}, {maxTokens: 2})) {}
        return await doppler.request('profile', {repeats: 2, tokenIds: [...Array(20).keys()]});
        """,
        f"{model_server}qwen2/manifest.json",
    )
    kernels = result["byKernel"]
    assert {"matvec_quant:matvec", "attention:split", "attention:combine"} <= set(kernels)
    assert "sample:sample" in kernels
    assert all(ms >= 0 for ms in kernels.values())
    assert result["gpuMsPerToken"] == pytest.approx(sum(kernels.values()))
    assert result["decodePassMs"] > 0 and result["prefillPassMs"] > 0
    assert "attention:split" in result["prefillByKernel"]
    prompt = result["prompt"]
    assert prompt["passes"] == 1 and prompt["wallMs"] >= prompt["gpuMs"] > 0


def test_bench_reports_every_figure(site_dir, model_server):
    """``build.py bench`` (here on SwiftShader, a tiny model, the chat page's sampling): the
    JSON figures the speed issue asks for, from the page's second generation."""
    from tools.bench import SYSTEM_CHROMIUM, run

    sampling = {"temperature": 0.7, "topK": 40, "topP": 0.95}
    query = {"prompt": 40, "decode": 8, "prefillTokens": 32, **sampling}
    result = run(site_dir, f"{model_server}llama/manifest.json", SYSTEM_CHROMIUM, query, 300)
    assert "error" not in result, result.get("error")
    assert result["sampling"] == sampling
    figures = ("loadMs", "coldTtftMs", "ttftMs", "prefillTokPerS", "decodeTokPerS")
    figures += ("cpuMsPerToken", "dispatchesPerToken", "weightBytesPerSecond", "gpuMsPerToken")
    assert all(result[name] > 0 for name in figures), {n: result.get(n) for n in figures}
    assert result["model"]["prefillTokens"] == result["prefillTokens"] == 32
    assert result["promptPasses"]["passes"] == 2  # a 32-token pass and a padded one
    assert result["generatedTokens"] == 8


def test_breaking_out_cancels_and_keeps_gpu_memory_flat(app, model_server):
    """``break`` out of a generation cancels it in the worker (the next one does not run
    beside it), and the decode passes it left in flight give their readbacks back: repeated
    early stops leave the GPU's live bytes where they were."""
    result = run_async(
        app,
        """
        await doppler.load(args[0], {contextLength: 64});
        await doppler.request('debug.gpuMeter', {install: true});
        const live = [];
        for (let i = 0; i < 4; i++) {
          for await (const e of doppler.generate({tokenIds: [1, 2, 3]}, {maxTokens: 50})) break;
          live.push((await doppler.request('debug.gpuMeter', {})).live);
        }
        let done = null;
        for await (const e of doppler.generate({tokenIds: [1, 2, 3]}, {maxTokens: 4})) done = e;
        return {live, done};
        """,
        f"{model_server}llama/manifest.json",
    )
    live = result["live"]
    assert live[1] == live[2] == live[3], live
    assert result["done"]["type"] == "done" and len(result["done"]["tokenIds"]) == 4
