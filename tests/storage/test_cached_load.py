"""The second load of a model comes from OPFS: no shard requests at all, same tokens."""

from __future__ import annotations

import pytest
from storage_helpers import generate, load, model_files, opfs
from tools.fault_server import Fault

pytestmark = pytest.mark.browser


def test_second_load_makes_no_shard_requests(
    site_url, models_url, faults, storage_root, browser_factory
):
    driver = browser_factory(site_url)
    url = f"{models_url}m1/big/manifest.json"
    first = load(driver, url)
    assert "info" in first, first
    files = model_files(storage_root / "big")
    fetched = faults.requests()
    assert sorted(r.path.split("/")[-1][:-4] for r in fetched) == sorted(files)
    assert all(r.status == 200 and r.range is None for r in fetched)
    tokens = generate(driver)
    last = first["events"][-1]
    assert last["loadedBytes"] == last["totalBytes"] and last["source"] == "network"
    assert last["caching"] is True

    stored = opfs(driver)
    assert stored["shards"] == files
    assert stored["partial"] == {} and stored["sidecars"] == {}

    faults.log.clear()
    faults.faults.append(Fault("status", status=503))
    second = load(driver, url)
    assert "info" in second, second
    assert faults.requests() == []
    assert [r.path for r in faults.requests(".json")] == ["big/manifest.json"]
    assert {e["source"] for e in second["events"]} == {"cache"}
    assert second["events"][-1]["cachedBytes"] == second["events"][-1]["totalBytes"]
    assert generate(driver) == tokens
