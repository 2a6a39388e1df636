"""Faults on the network tier, each in a fresh browser profile, with assertions on what was
requested (the fault server's log) and what ended up in OPFS (read back from the page)."""

from __future__ import annotations

import time

import pytest
from storage_helpers import generate, load, model_files, opfs, weight_shards
from tools.fault_server import Fault

pytestmark = pytest.mark.browser

MiB = 1 << 20

# Start a load in the background; window.loadDone gets {info} or {error}.
START_LOAD = """
window.loadDone = null;
window.progressEvents = [];
window.loadAbort = new AbortController();
window.doppler.load(arguments[0], {
  contextLength: 32,
  signal: window.loadAbort.signal,
  onProgress: (e) => window.progressEvents.push(e),
}).then((info) => { window.loadDone = {info}; },
        (e) => { window.loadDone = {error: {code: e.code, message: e.message}}; });
"""


def largest_shard(storage_root) -> tuple[str, int]:
    return max(weight_shards(storage_root / "big").items(), key=lambda item: item[1])


def file_of(request) -> str:
    return request.path.rsplit("/", 1)[-1].removesuffix(".bin")


def requests_for(faults, name: str) -> list:
    return [r for r in faults.requests() if r.path.endswith(f"{name}.bin")]


def wait_for(driver, script: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


@pytest.fixture
def big_url(models_url: str) -> str:
    return f"{models_url}m1/big/manifest.json"


def test_dropped_connection_resumes_from_last_verified_block(
    site_url, big_url, faults, storage_root, browser_factory
):
    name, size = largest_shard(storage_root)
    faults.faults.append(Fault("drop", suffix=f"{name}.bin", at=2 * MiB + MiB // 2, times=1))
    driver = browser_factory(site_url)
    result = load(driver, big_url)
    assert "info" in result, result
    first, second = requests_for(faults, name)
    assert (first.range, first.sent) == (None, 2 * MiB + MiB // 2)
    assert (second.mirror, second.range, second.status) == ("m1", f"bytes={2 * MiB}-", 206)
    assert second.sent == size - 2 * MiB
    assert opfs(driver)["shards"] == model_files(storage_root / "big")


def test_range_answered_with_200_is_used_correctly(
    site_url, big_url, faults, storage_root, browser_factory
):
    name, size = largest_shard(storage_root)
    faults.faults += [
        Fault("drop", suffix=f"{name}.bin", at=MiB + MiB // 2, times=1),
        Fault("ignore_range", suffix=f"{name}.bin"),
    ]
    driver = browser_factory(site_url)
    assert "info" in load(driver, big_url)
    first, second = requests_for(faults, name)
    assert (first.range, first.sent) == (None, MiB + MiB // 2)
    assert (second.range, second.status, second.sent) == (f"bytes={MiB}-", 200, size)
    assert opfs(driver)["shards"][name] == size
    assert len(generate(driver)) == 4


def test_404_on_first_source_uses_the_next_mirror(
    site_url, big_url, faults, storage_root, browser_factory
):
    faults.faults.append(Fault("status", mirror="m1", status=404))
    driver = browser_factory(site_url)
    assert "info" in load(driver, big_url)
    files = model_files(storage_root / "big")
    assert sorted(file_of(r) for r in faults.requests(mirror="m1")) == sorted(files)
    assert {r.status for r in faults.requests(mirror="m1")} == {404}
    assert sorted(file_of(r) for r in faults.requests(mirror="m2")) == sorted(files)
    assert faults.requests(mirror="m3") == []
    assert opfs(driver)["shards"] == files


def test_flipped_byte_is_refetched_from_the_next_mirror(
    site_url, big_url, faults, storage_root, browser_factory
):
    name, size = largest_shard(storage_root)
    faults.faults.append(Fault("flip", mirror="m1", suffix=f"{name}.bin", at=MiB + 123))
    driver = browser_factory(site_url)
    assert "info" in load(driver, big_url)
    bad, good = requests_for(faults, name)
    assert bad.mirror == "m1"
    # the verified first block is kept: the next mirror is asked only for the rest
    assert (good.mirror, good.range, good.status) == ("m2", f"bytes={MiB}-", 206)
    assert opfs(driver)["shards"][name] == size


def test_bad_bytes_everywhere_fail_naming_the_shard_and_are_never_cached(
    site_url, big_url, faults, storage_root, browser_factory
):
    name, _ = largest_shard(storage_root)
    faults.faults.append(Fault("flip", suffix=f"{name}.bin", at=MiB + 123))
    driver = browser_factory(site_url)
    result = load(driver, big_url)
    assert result["error"]["code"] == "hash_mismatch"
    message = result["error"]["message"]
    assert name in message and all(f"/{m}/big/" in message for m in ("m1", "m2", "m3"))
    assert [r.mirror for r in requests_for(faults, name)] == ["m1", "m2", "m3"]
    stored = opfs(driver)
    assert name not in stored["shards"]
    # only the verified first block survives, ready for a later resume
    assert stored["sidecars"][name]["verified"] == 1
    assert stored["partial"][f"{name}.bin"] == MiB


def test_truncated_body_is_rejected(site_url, big_url, faults, storage_root, browser_factory):
    name, size = largest_shard(storage_root)
    faults.faults.append(Fault("truncate", mirror="m1", suffix=f"{name}.bin", at=size - 4096))
    driver = browser_factory(site_url)
    assert "info" in load(driver, big_url)
    assert [r.mirror for r in requests_for(faults, name)] == ["m1", "m2"]
    assert opfs(driver)["shards"][name] == size


def test_html_instead_of_bytes_is_rejected_with_a_clear_message(
    site_url, big_url, faults, storage_root, browser_factory
):
    faults.faults.append(Fault("html"))
    driver = browser_factory(site_url)
    result = load(driver, big_url)
    assert result["error"]["code"] == "hash_mismatch"
    assert "HTML page" in result["error"]["message"]
    assert opfs(driver)["shards"] == {}


def test_slow_server_keeps_reporting_progress_and_abort_stops_it(
    site_url, big_url, faults, storage_root, browser_factory
):
    faults.faults.append(Fault("slow", rate=256 * 1024))
    driver = browser_factory(site_url)
    driver.execute_script(START_LOAD, big_url)
    wait_for(driver, "return window.progressEvents.length >= 10")
    events = driver.execute_script("return window.progressEvents")
    loaded = [e["loadedBytes"] for e in events]
    assert loaded == sorted(loaded) and loaded[-1] > loaded[0]
    assert events[-1]["bytesPerSecond"] > 0 and events[-1]["etaSeconds"] > 0
    driver.execute_script("window.loadAbort.abort()")
    done = wait_for(driver, "return window.loadDone", timeout=10)
    assert done["error"]["code"] == "aborted"
    time.sleep(1.0)
    sent = sum(r.sent for r in faults.requests())
    time.sleep(1.0)
    assert sum(r.sent for r in faults.requests()) == sent  # nothing is still streaming
    assert opfs(driver)["shards"].keys() <= model_files(storage_root / "big").keys()
    assert not set(opfs(driver)["shards"]) & set(weight_shards(storage_root / "big"))


def test_quota_too_small_fails_clearly_and_leaves_nothing(
    site_url, big_url, faults, storage_root, browser_factory
):
    driver = browser_factory(site_url)
    origin = site_url.rstrip("/")
    driver.execute_cdp_cmd(
        "Storage.overrideQuotaForOrigin", {"origin": origin, "quotaSize": 2 * MiB}
    )
    result = load(driver, big_url)
    assert result["error"]["code"] == "quota_exceeded", result
    message = result["error"]["message"]
    assert "not enough storage" in message and "MiB" in message and "quota" in message
    assert set(weight_shards(storage_root / "big")).isdisjoint(
        file_of(r) for r in faults.requests()
    )
    stored = opfs(driver)
    assert stored["shards"] == {} and stored["partial"] == {} and stored["models"] == []


def test_reload_mid_download_resumes_from_what_was_verified(
    site_url, big_url, faults, storage_root, browser_factory
):
    name, size = largest_shard(storage_root)
    faults.faults.append(Fault("slow", suffix=f"{name}.bin", rate=512 * 1024))
    driver = browser_factory(site_url)
    driver.execute_script(START_LOAD, big_url)
    deadline = time.monotonic() + 60
    while faults.sending.get(f"/m1/big/{name}.bin", 0) < 2 * MiB + MiB // 2:
        assert time.monotonic() < deadline, "the slow shard never got going"
        time.sleep(0.1)
    time.sleep(0.3)  # the page has verified and persisted two blocks by now
    driver.refresh()
    wait_for(driver, "return window.doppler || window.dopplerError", timeout=120)
    faults.faults.clear()
    faults.log.clear()
    sidecar = opfs(driver)["sidecars"].get(name)
    assert sidecar is not None and sidecar["verified"] >= 2
    assert "info" in load(driver, big_url)
    (resumed,) = requests_for(faults, name)
    assert resumed.range == f"bytes={sidecar['verified'] * MiB}-"
    assert [r for r in faults.requests() if r is not resumed] == []
    assert opfs(driver)["shards"][name] == size


def test_without_opfs_loads_from_network_and_says_caching_is_off(
    site_url, big_url, faults, storage_root, browser_factory
):
    driver = browser_factory(site_url, {"profile.default_content_setting_values.cookies": 2})
    first = load(driver, big_url)
    assert "info" in first, first
    last = first["events"][-1]
    assert last["caching"] is False and "caching is off" in last["cachingNote"]
    assert len(generate(driver)) == 4
    faults.log.clear()
    assert "info" in load(driver, big_url)
    assert len(faults.requests()) == len(model_files(storage_root / "big"))
