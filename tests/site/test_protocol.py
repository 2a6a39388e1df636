"""The worker protocol end to end: streamed events, the final done, errors, cancellation."""

from __future__ import annotations

import pytest

from harness.browser import PageError, run_async

pytestmark = pytest.mark.browser


def test_stream_yields_events_then_one_done(app):
    events = run_async(
        app,
        """
        const seen = [];
        for await (const event of doppler.stream('debug.ticks', {count: 4})) seen.push(event);
        return seen;
        """,
    )
    assert [e["type"] for e in events] == ["tick"] * 4 + ["done"]
    assert [e["index"] for e in events[:4]] == [0, 1, 2, 3]
    assert events[-1]["count"] == 4


def test_errors_carry_code_and_message(app):
    with pytest.raises(PageError) as info:
        run_async(
            app, "return await doppler.request('debug.ticks', {count: 3, failAt: 1, code: 'boom'});"
        )
    assert info.value.code == "boom"
    assert "failing as asked" in info.value.message
    with pytest.raises(PageError) as info:
        run_async(app, "return await doppler.request('no.such.kind', {});")
    assert info.value.code == "unknown_kind"


def test_abort_signal_cancels_a_running_request(app):
    outcome = run_async(
        app,
        """
        const controller = new AbortController();
        const seen = [];
        try {
          for await (const event of doppler.stream('debug.ticks', {count: 1000, delayMs: 20},
                                                   {signal: controller.signal})) {
            seen.push(event.type);
            if (seen.length === 3) controller.abort();
          }
          return {finished: true};
        } catch (error) {
          return {code: error.code, seen: seen.length};
        }
        """,
    )
    assert outcome["code"] == "aborted"
    assert 3 <= outcome["seen"] < 10
    # The worker is still healthy after a cancellation.
    assert run_async(app, "return await doppler.request('debug.ticks', {count: 2});") == {
        "count": 2
    }


def test_concurrent_requests_are_routed_by_id(app):
    results = run_async(
        app,
        """
        const counts = [5, 1, 3];
        return await Promise.all(counts.map((count) =>
          doppler.request('debug.ticks', {count, delayMs: 5 * count})));
        """,
    )
    assert [r["count"] for r in results] == [5, 1, 3]


def test_overrides_lower_limits_and_hide_features(app):
    """The fallback knobs tests use on SwiftShader: a small binding limit, no subgroups."""
    status = run_async(
        app,
        """
        const { Doppler } = await import('./app/doppler.js');
        const limited = await Doppler.create({
          maxStorageBufferBindingSize: 64 * 1024 * 1024, disableFeatures: ['subgroups'] });
        const status = limited.status();
        limited.terminate();
        return status;
        """,
    )
    assert status["gpu"]["limits"]["maxStorageBufferBindingSize"] == 64 * 1024 * 1024
    assert "subgroups" not in status["gpu"]["features"]
    assert "timestamp-query" in status["gpu"]["features"]
