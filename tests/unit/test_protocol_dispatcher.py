"""The worker-side dispatcher under CPython: routing, results, typed errors, cancellation."""

from __future__ import annotations

import asyncio

from doppler.errors import DopplerError
from doppler.worker.protocol import Dispatcher


async def _echo(payload, emit):
    for item in payload["items"]:
        emit({"type": "item", "value": item})
        await asyncio.sleep(0)
    return {"n": len(payload["items"])}


async def _slow(payload, emit):
    while True:
        emit({"type": "tick"})
        await asyncio.sleep(0.001)


async def _typed_failure(payload, emit):
    raise DopplerError("the manifest is bad", "bad_manifest")


async def _bug(payload, emit):
    return {}["missing"]


def _run(messages, settle=0.02):
    posted = []

    async def main():
        dispatcher = Dispatcher(
            posted.append, {"echo": _echo, "slow": _slow, "fail": _typed_failure, "bug": _bug}
        )
        for message in messages:
            dispatcher.on_message(message)
            await asyncio.sleep(settle)
        await asyncio.sleep(settle)

    asyncio.run(main())
    return posted


def test_events_then_exactly_one_done():
    posted = _run([{"type": "request", "id": 1, "kind": "echo", "payload": {"items": [1, 2]}}])
    assert [m["type"] for m in posted] == ["event", "event", "done"]
    assert posted[-1] == {"type": "done", "id": 1, "result": {"n": 2}}


def test_typed_errors_keep_their_code():
    posted = _run([{"type": "request", "id": 7, "kind": "fail", "payload": None}])
    assert posted == [
        {
            "type": "error",
            "id": 7,
            "error": {"code": "bad_manifest", "message": "the manifest is bad"},
        }
    ]


def test_bugs_become_internal_errors_naming_the_exception():
    (message,) = _run([{"type": "request", "id": 2, "kind": "bug", "payload": None}])
    assert message["error"]["code"] == "internal"
    assert "KeyError" in message["error"]["message"]


def test_unknown_kind_is_rejected_by_name():
    (message,) = _run([{"type": "request", "id": 3, "kind": "nope", "payload": None}])
    assert message["error"]["code"] == "unknown_kind"
    assert "'nope'" in message["error"]["message"]


def test_cancel_stops_the_handler_with_aborted():
    posted = _run(
        [
            {"type": "request", "id": 4, "kind": "slow", "payload": None},
            {"type": "cancel", "id": 4},
        ]
    )
    assert posted[-1]["type"] == "error"
    assert posted[-1]["error"]["code"] == "aborted"
    assert sum(m["type"] == "error" for m in posted) == 1
    assert all(m["type"] == "event" for m in posted[:-1])


def test_cancel_of_unknown_request_is_ignored():
    assert _run([{"type": "cancel", "id": 99}]) == []
