"""One range of a shard (an MoE expert) by HTTP Range, verified and cached by block, each in a
fresh browser profile; asserts on the bytes, the fault server's log and what OPFS holds.

The ``ranged`` model has 4 KiB blocks, so a range's block-aligned cover is a true sub-range
of its 3 MiB shard."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from storage_helpers import PageError, load, model_files, opfs, request, weight_shards
from tools.fault_server import Fault

from harness.browser import run_async

pytestmark = pytest.mark.browser

B = 4096  # the ranged model's block size


@pytest.fixture
def ranged_url(models_url: str) -> str:
    return f"{models_url}m1/ranged/manifest.json"


@pytest.fixture
def shard(storage_root: Path) -> tuple[str, int]:
    """The ranged model's largest weight shard: (name, size)."""
    return max(weight_shards(storage_root / "ranged").items(), key=lambda item: item[1])


def get_range(driver, url: str, name: str, offset: int, length: int, **extra) -> dict:
    payload = {"manifest": url, "shard": name, "offset": offset, "length": length, **extra}
    return request(driver, "debug.range", payload)


def expect(storage_root: Path, name: str, offset: int, length: int) -> str:
    data = (storage_root / "ranged" / f"{name}.bin").read_bytes()
    return hashlib.sha256(data[offset : offset + length]).hexdigest()


def shard_requests(faults, name: str) -> list:
    return [r for r in faults.requests() if r.path.endswith(f"{name}.bin")]


def cover(first: int, last: int) -> str:
    """The Range header for blocks ``first..last``."""
    return f"bytes={first * B}-{(last + 1) * B - 1}"


def test_mid_shard_range_is_one_range_request_for_its_cover_then_cached(
    site_url, ranged_url, faults, storage_root, shard, browser_factory
):
    name, size = shard
    driver = browser_factory(site_url)
    offset, length = 10 * B + 100, 3 * B  # blocks 10..13
    got = get_range(driver, ranged_url, name, offset, length)
    assert got["sha256"] == expect(storage_root, name, offset, length)
    assert (got["length"], got["source"], got["fetchedBytes"]) == (length, "network", 4 * B)
    (only,) = shard_requests(faults, name)
    assert (only.mirror, only.range, only.status, only.sent) == ("m1", cover(10, 13), 206, 4 * B)
    stored = opfs(driver)
    assert name not in stored["shards"]
    assert stored["sidecars"][name] == {
        "size": size,
        "blockSize": B,
        "verified": 0,
        "extra": [[10, 14]],
    }
    faults.log.clear()
    again = get_range(driver, ranged_url, name, offset, length)
    assert (again["sha256"], again["source"], again["fetchedBytes"]) == (got["sha256"], "cache", 0)
    assert shard_requests(faults, name) == []


def test_overlapping_range_fetches_only_the_missing_blocks(
    site_url, ranged_url, faults, storage_root, shard, browser_factory
):
    name, _ = shard
    driver = browser_factory(site_url)
    get_range(driver, ranged_url, name, 10 * B + 100, 3 * B)  # blocks 10..13
    faults.log.clear()
    got = get_range(driver, ranged_url, name, 12 * B + 7, 4 * B)  # blocks 12..16
    assert got["sha256"] == expect(storage_root, name, 12 * B + 7, 4 * B)
    (only,) = shard_requests(faults, name)
    assert (only.range, only.status) == (cover(14, 16), 206)
    assert opfs(driver)["sidecars"][name]["extra"] == [[10, 17]]


def test_flipped_byte_on_first_mirror_refetches_only_the_rest_from_the_next(
    site_url, ranged_url, faults, storage_root, shard, browser_factory
):
    name, _ = shard
    faults.faults.append(Fault("flip", mirror="m1", suffix=f"{name}.bin", at=11 * B + 5))
    driver = browser_factory(site_url)
    got = get_range(driver, ranged_url, name, 10 * B, 4 * B)  # blocks 10..13
    assert got["sha256"] == expect(storage_root, name, 10 * B, 4 * B)
    bad, good = shard_requests(faults, name)
    assert (bad.mirror, bad.range) == ("m1", cover(10, 13))
    assert (good.mirror, good.range, good.status) == ("m2", cover(11, 13), 206)
    assert opfs(driver)["sidecars"][name]["extra"] == [[10, 14]]
    # what is cached is the good copy (the flip is still active on m1: no request is made)
    faults.log.clear()
    again = get_range(driver, ranged_url, name, 10 * B, 4 * B)
    assert (again["sha256"], again["source"]) == (got["sha256"], "cache")
    assert shard_requests(faults, name) == []


def test_bad_bytes_everywhere_fail_naming_shard_block_and_sources(
    site_url, ranged_url, faults, storage_root, shard, browser_factory
):
    name, _ = shard
    faults.faults.append(Fault("flip", suffix=f"{name}.bin", at=11 * B + 5))
    driver = browser_factory(site_url)
    with pytest.raises(PageError) as failed:
        get_range(driver, ranged_url, name, 10 * B, 4 * B)
    message = str(failed.value)
    assert "hash_mismatch" in message and name in message and "block 11 " in message
    assert all(f"/{m}/ranged/" in message for m in ("m1", "m2", "m3"))
    assert [(r.mirror, r.range) for r in shard_requests(faults, name)] == [
        ("m1", cover(10, 13)),
        ("m2", cover(11, 13)),
        ("m3", cover(11, 13)),
    ]
    # only block 10 (verified from m1 before the bad one) is recorded
    assert opfs(driver)["sidecars"][name]["extra"] == [[10, 11]]


def test_range_answered_with_200_still_yields_the_right_bytes(
    site_url, ranged_url, faults, storage_root, shard, browser_factory
):
    name, _ = shard
    faults.faults.append(Fault("ignore_range", suffix=f"{name}.bin"))
    driver = browser_factory(site_url)
    got = get_range(driver, ranged_url, name, 20 * B + 3, 2 * B)  # blocks 20..22
    assert got["sha256"] == expect(storage_root, name, 20 * B + 3, 2 * B)
    (only,) = shard_requests(faults, name)
    assert (only.range, only.status) == (cover(20, 22), 200)
    assert got["fetchedBytes"] >= 23 * B  # the body was read from byte 0
    assert opfs(driver)["sidecars"][name]["extra"] == [[20, 23]]


def test_ranges_covering_a_shard_commit_it_and_a_full_load_uses_it(
    site_url, ranged_url, faults, storage_root, browser_factory
):
    name, size = min(weight_shards(storage_root / "ranged").items(), key=lambda item: item[1])
    driver = browser_factory(site_url)
    half = (size // 2 // B) * B + 123  # not block-aligned: the two covers overlap by a block
    first = get_range(driver, ranged_url, name, 0, half)
    assert opfs(driver)["sidecars"][name] == {
        "size": size,
        "blockSize": B,
        "verified": half // B + 1,
    }
    second = get_range(driver, ranged_url, name, half, size - half)
    assert first["sha256"] == expect(storage_root, name, 0, half)
    assert second["sha256"] == expect(storage_root, name, half, size - half)
    assert [r.range for r in shard_requests(faults, name)] == [
        cover(0, half // B),
        f"bytes={(half // B + 1) * B}-{size - 1}",  # the last block is short: clipped
    ]
    stored = opfs(driver)
    assert stored["shards"][name] == size
    assert name not in stored["sidecars"] and f"{name}.bin" not in stored["partial"]
    faults.log.clear()
    cached = get_range(driver, ranged_url, name, 5 * B + 1, 3 * B)
    assert (cached["source"], cached["sha256"]) == (
        "cache",
        expect(storage_root, name, 5 * B + 1, 3 * B),
    )
    assert "info" in load(driver, ranged_url)
    assert shard_requests(faults, name) == []
    assert opfs(driver)["shards"] == model_files(storage_root / "ranged")


def test_full_load_resumes_through_a_sidecar_that_holds_a_block_set(
    site_url, ranged_url, faults, storage_root, shard, browser_factory
):
    name, size = shard
    driver = browser_factory(site_url)
    get_range(driver, ranged_url, name, 3 * B, B)  # block 3 only: a set, no prefix
    get_range(driver, ranged_url, name, 0, B)  # block 0: the prefix is now 1 block
    assert opfs(driver)["sidecars"][name] == {
        "size": size,
        "blockSize": B,
        "verified": 1,
        "extra": [[3, 4]],
    }
    faults.log.clear()
    assert "info" in load(driver, ranged_url)
    (full,) = shard_requests(faults, name)
    assert (full.range, full.status, full.sent) == (f"bytes={B}-", 206, size - B)
    stored = opfs(driver)
    assert stored["shards"] == model_files(storage_root / "ranged")
    assert stored["sidecars"] == {} and stored["partial"] == {}


def test_without_cache_fetches_the_range_and_writes_nothing(
    site_url, ranged_url, faults, storage_root, shard, browser_factory
):
    name, _ = shard
    driver = browser_factory(site_url)
    for _ in range(2):
        got = get_range(driver, ranged_url, name, 30 * B + 9, B, useCache=False)
        assert (got["sha256"], got["source"]) == (
            expect(storage_root, name, 30 * B + 9, B),
            "network",
        )
    assert [r.range for r in shard_requests(faults, name)] == [cover(30, 31)] * 2
    stored = opfs(driver)
    assert stored["shards"] == {} and stored["partial"] == {} and stored["sidecars"] == {}


# A dedicated worker of the page holds the shard's partial file open (as another tab would).
HOLD_PARTIAL = """
const [name] = args;
const code = `onmessage = async (e) => {
  const root = await (await navigator.storage.getDirectory())
    .getDirectoryHandle('doppler', {create: true});
  const dir = await root.getDirectoryHandle('partial', {create: true});
  const file = await dir.getFileHandle(e.data + '.bin', {create: true});
  self.handle = await file.createSyncAccessHandle();
  postMessage('held');
};`;
window.holder = new Worker(URL.createObjectURL(new Blob([code])));
await new Promise((resolve) => {
  window.holder.onmessage = resolve;
  window.holder.postMessage(name);
});
"""


def test_partial_held_by_another_context_falls_back_to_ram_uncached(
    site_url, ranged_url, faults, storage_root, shard, browser_factory
):
    name, _ = shard
    driver = browser_factory(site_url)
    request(driver, "cache.usage")  # the store exists before the other context opens a file
    run_async(driver, HOLD_PARTIAL, name)
    for _ in range(2):
        got = get_range(driver, ranged_url, name, 40 * B, 2 * B)
        assert (got["sha256"], got["source"]) == (
            expect(storage_root, name, 40 * B, 2 * B),
            "network",
        )
    assert [r.range for r in shard_requests(faults, name)] == [cover(40, 41)] * 2
    stored = opfs(driver)
    assert stored["sidecars"].get(name) in (None, "") and name not in stored["shards"]
    assert stored["partial"][f"{name}.bin"] == 0  # nothing was written
