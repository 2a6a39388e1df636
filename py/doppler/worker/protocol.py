"""Worker-side half of the main-thread ↔ worker protocol (the other half is ``app/protocol.js``).

Messages from the main thread:
    ``{type: "request", id, kind, payload}``  start a request of a named ``kind``
    ``{type: "cancel", id}``                  the caller's AbortSignal fired
Messages to the main thread, for request ``id``:
    ``{type: "event", id, event}``            zero or more streaming events
    ``{type: "done", id, result}``            exactly one final result, or instead
    ``{type: "error", id, error: {code, message}}``

Handlers are ``async def handler(payload, emit)``; ``emit(event)`` streams an event and the
return value becomes the ``done`` result. Cancellation cancels the handler's asyncio task,
so a handler stops at its next ``await`` and the caller gets an ``aborted`` error.
This module is pure Python (the transport is injected) so it is tested under CPython.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from doppler.errors import Aborted, BadRequest, DopplerError

Emit = Callable[[dict[str, Any]], None]
Handler = Callable[[Any, Emit], Awaitable[Any]]
Post = Callable[[dict[str, Any]], None]


class Dispatcher:
    """Routes requests to handlers by ``kind`` and owns the tasks of running requests."""

    def __init__(self, post: Post, handlers: Mapping[str, Handler]) -> None:
        self._post = post
        self._handlers = dict(handlers)
        self._running: dict[int, asyncio.Task[None]] = {}

    @property
    def kinds(self) -> list[str]:
        return sorted(self._handlers)

    def on_message(self, message: Mapping[str, Any]) -> None:
        """Accept one message from the main thread; never raises."""
        kind = message.get("type")
        request_id = message.get("id")
        if kind == "request":
            task = asyncio.ensure_future(self._run(request_id, message))
            self._running[request_id] = task
            task.add_done_callback(lambda _t: self._running.pop(request_id, None))
        elif kind == "cancel":
            task = self._running.get(request_id)
            if task is not None:
                task.cancel()

    async def _run(self, request_id: int, message: Mapping[str, Any]) -> None:
        def emit(event: dict[str, Any]) -> None:
            self._post({"type": "event", "id": request_id, "event": event})

        try:
            handler = self._handlers.get(message.get("kind"))
            if handler is None:
                raise BadRequest(f"unknown request kind {message.get('kind')!r}", "unknown_kind")
            result = await handler(message.get("payload"), emit)
        except asyncio.CancelledError:
            self._post_error(request_id, Aborted("the request was cancelled"))
        except DopplerError as err:
            self._post_error(request_id, err)
        except Exception as err:  # a bug: report it with its origin instead of hanging
            where = traceback.format_exception(err)[-2].strip() if err.__traceback__ else ""
            self._post_error(request_id, DopplerError(f"{type(err).__name__}: {err} ({where})"))
        else:
            self._post({"type": "done", "id": request_id, "result": result})

    def _post_error(self, request_id: int, err: DopplerError) -> None:
        self._post({"type": "error", "id": request_id, "error": err.to_dict()})
