"""Expert paging changes nothing but memory: a tiny Mixtral (2 layers x 8 experts, top-2)
whose GPU budget holds only a quarter of its experts gives the tokens and logits of the fully
resident run, with the RAM tier off and on, and really pages: misses, evictions, more bytes
uploaded than the experts have, single-expert Range requests, and GPU buffer bytes (counted
in the worker by wrapping WebGPU, not by DOPPLER's own books) within the budget.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tools.fault_server import FaultState, fault_server

from doppler.convert.convert import convert
from harness.browser import PageError, run_async
from harness.parity import max_relative_error
from harness.tiny_models import make_model

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BLOCK = 4096  # small blocks, so one expert's block cover is a true sub-range of its shard
PLAN_RESERVE = 2 << 20  # transformer.PLAN_RESERVE_BYTES: budget kept from the arenas
PROMPT = [3, 17, 99, 42, 5, 64, 7, 120, 33, 8]
TOKENS = 12

RUN = """
const [url, options, ids, count] = args;
if (options.meter) await doppler.request('debug.gpuMeter', {install: true});
const info = await doppler.load(url, {contextLength: 64, ...options});
const scored = await doppler.score({tokenIds: ids, returnLogits: true});
let done = null;
for await (const e of doppler.generate({tokenIds: ids}, {maxTokens: count}))
  if (e.type === 'done') done = e;
const meter = options.meter ? await doppler.request('debug.gpuMeter', {}) : null;
return {info, logits: scored.logits, done, meter};
"""


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FaultState, Path]]:
    """(manifest URL, server log, model folder) of the tiny Mixtral on a logging server."""
    hf = make_model("mixtral", tmp_path_factory.mktemp("hf") / "mixtral")
    root = tmp_path_factory.mktemp("paging")
    convert(hf, root / "mixtral", progress=False, block_size=BLOCK)
    with fault_server(root) as (url, state):
        yield f"{url}m1/mixtral/manifest.json", state, root / "mixtral"


def run(driver, url: str, **options) -> dict:
    return run_async(driver, RUN, url, options, PROMPT, TOKENS)


def quarter_budget(resident: dict) -> int:
    """A GPU budget that leaves room for a quarter of the experts (4 of 16 slots)."""
    info = resident["info"]
    experts = info["experts"]
    others = sum(info["gpuBytes"].values()) - info["gpuBytes"]["experts"]
    return others + PLAN_RESERVE + experts["total_experts"] * experts["slot_bytes"] // 4


def expert_shards(model: Path) -> dict[str, int]:
    """Shard name -> size of the shards holding experts (from the index shards)."""
    manifest = json.loads((model / "manifest.json").read_text())
    out = {}
    for ref in manifest["index"]:
        index = json.loads((model / f"{ref['name']}.bin").read_text())
        for entry in index["experts"]:
            for shard, _offset, _size in entry["spans"]:
                info = index["shards"][shard]
                out[info["name"]] = info["size"]
    return out


def test_paging_changes_nothing_and_really_pages(site_url, moe_model, browser_factory):
    url, server, folder = moe_model
    resident = run(browser_factory(site_url), url)
    experts = resident["info"]["experts"]
    assert experts["resident"] and experts["total_experts"] == 16
    budget = quarter_budget(resident)
    for ram in (0, 4 * experts["slot_bytes"]):
        with server.lock:
            server.log.clear()
        paged = run(
            browser_factory(site_url), url, gpuBudgetBytes=budget, ramBudgetBytes=ram, meter=True
        )
        info = paged["info"]["experts"]
        assert not info["resident"] and info["gpu_slots"] == 4, info
        assert paged["done"]["tokenIds"] == resident["done"]["tokenIds"]
        error = max_relative_error(np.array(paged["logits"]), np.array(resident["logits"]))
        assert error < 1e-5, error
        stats = paged["done"]["stats"]["paging"]
        print(f"ram budget {ram}: {stats}")
        assert stats["gpu_misses"] > 0 and stats["gpu_evictions"] > 0
        total_expert_bytes = experts["total_experts"] * experts["slot_bytes"]
        assert stats["bytes_uploaded"] > total_expert_bytes
        if ram:
            assert stats["ram_hits"] > 0 and stats["ram_bytes"] <= ram
        else:
            assert stats["ram_hits"] == 0 and stats["opfs_reads"] > 0
        # The budget held, counted outside DOPPLER's books.
        assert paged["meter"]["peak"] <= budget, (paged["meter"], budget)
        # Experts came one at a time by Range, never as whole shards.
        shards = expert_shards(folder)
        ranged = [r for r in server.requests() if r.path.rsplit("/", 1)[-1][:-4] in shards]
        assert ranged and all(r.range is not None and r.status == 206 for r in ranged)
        for request in ranged:
            start, end = (int(v) for v in request.range.removeprefix("bytes=").split("-"))
            assert end - start + 1 <= experts["slot_bytes"] + 2 * BLOCK
            assert end - start + 1 < shards[request.path.rsplit("/", 1)[-1][:-4]]


def test_a_budget_without_room_for_one_token_says_so(app, moe_model):
    url = moe_model[0]
    resident = run(app, url)
    budget = quarter_budget(resident) - 3 * resident["info"]["experts"]["slot_bytes"]
    with pytest.raises(PageError) as info:
        run(app, url, gpuBudgetBytes=budget)
    assert info.value.code == "cache_too_small"
    assert "raise gpuBudgetBytes" in info.value.message
