"""Pure storage policy (CPython): LRU eviction over shared shards, the quota check and its
message, progress aggregation with rate and ETA."""

from __future__ import annotations

import pytest

from doppler.storage.errors import QuotaExceeded, StorageFull, from_code
from doppler.storage.eviction import choose_victims, freed_bytes, orphaned_shards
from doppler.storage.progress import LoadProgress
from doppler.storage.records import ModelRecord
from doppler.storage.space import check_fits, missing_bytes, out_of_space

MiB = 1 << 20


def record(model_id: str, shards: dict[str, int], last_used: float) -> ModelRecord:
    return ModelRecord(model_id, f"model {model_id}", f"https://x/{model_id}/", shards, last_used)


OLD = record("old", {"a": 10, "shared": 5}, 1.0)
MID = record("mid", {"b": 20, "shared": 5}, 2.0)
NEW = record("new", {"c": 40}, 3.0)
STORED = {"a": 10, "b": 20, "c": 40, "shared": 5}


def test_deleting_a_model_frees_only_shards_no_other_model_uses():
    assert orphaned_shards([OLD], [MID, NEW], STORED) == {"a": 10}
    assert freed_bytes([OLD, MID], [OLD, MID, NEW], STORED) == 35


def test_victims_are_least_recently_used_first_and_stop_when_enough():
    records = [NEW, OLD, MID]
    assert choose_victims(records, set(), 10, STORED) == [OLD]
    assert choose_victims(records, set(), 11, STORED) == [OLD, MID]
    assert choose_victims(records, set(), 0, STORED) == []


def test_models_in_use_are_never_victims():
    assert choose_victims([OLD, MID, NEW], {"old"}, 25, STORED) == [MID, NEW]
    assert choose_victims([OLD, MID, NEW], {"old", "mid", "new"}, 1, STORED) == []


def test_missing_bytes_counts_verified_partial_blocks():
    shards = {"a": 10, "b": 20, "c": 40}
    assert missing_bytes(shards, {"a": 10, "b": 7}, {"c": 15}) == 20 + 25


def test_quota_message_has_the_numbers():
    check_fits("Gemma", 100 * MiB, quota=300 * MiB, usage=200 * MiB, freed=0)
    with pytest.raises(QuotaExceeded) as err:
        check_fits("Gemma", 100 * MiB + 1, quota=300 * MiB, usage=200 * MiB, freed=5 * MiB)
    message = str(err.value)
    assert err.value.code == "quota_exceeded"
    for text in ("Gemma", "100.0 MiB more", "only 100.0 MiB", "300.0 MiB", "freed 5.0 MiB"):
        assert text in message


def test_out_of_space_message_has_the_numbers():
    err = out_of_space("Gemma", 250 * MiB, quota=2 * MiB, usage=MiB, detail="write failed")
    assert err.code == "quota_exceeded"
    for text in ("Gemma (250.0 MiB)", "write failed", "1.0 MiB in use", "2.0 MiB quota"):
        assert text in str(err)


def test_js_error_codes_become_typed_errors():
    assert isinstance(from_code("quota_exceeded", "x"), StorageFull)
    assert from_code("hash_mismatch", "x").code == "hash_mismatch"
    assert from_code("aborted", "x").code == "aborted"
    assert from_code("something_new", "x").code == "something_new"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_sums_shards_reports_sources_rate_and_eta():
    events: list[dict] = []
    clock = Clock()
    tracker = LoadProgress(events.append, {"a": 100, "b": 300}, caching=True, clock=clock)
    clock.now = 1.0
    tracker.received("a", 50)
    clock.now = 2.0
    tracker.received("a", 30)  # a bad block was dropped: the count goes back
    tracker.finished("b", "cache")
    last = events[-1]
    assert (last["loadedBytes"], last["totalBytes"], last["shards"]) == (330, 400, 1)
    assert last["cachedBytes"] == 300 and last["networkBytes"] == 0
    assert last["source"] == "cache"
    assert last["bytesPerSecond"] == pytest.approx(165.0)
    assert last["etaSeconds"] == pytest.approx(70 / 165.0)
    tracker.finished("a", "network")
    assert events[-1]["loadedBytes"] == 400 and events[-1]["etaSeconds"] == 0


def test_progress_is_throttled_but_shard_completions_always_emit():
    events: list[dict] = []
    clock = Clock()
    tracker = LoadProgress(events.append, {"a": 100}, caching=False, note="off", clock=clock)
    for count in range(1, 50):
        tracker.received("a", count)  # same instant: one event
    assert len(events) == 1
    tracker.finished("a", "network")
    assert len(events) == 2 and events[-1]["caching"] is False
    assert events[-1]["cachingNote"] == "off"
