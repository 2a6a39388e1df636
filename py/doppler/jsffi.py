"""Small helpers for crossing into JavaScript from Pyodide.

Only importable inside Pyodide (``js`` and ``pyodide.ffi`` exist there); modules that need
it import it lazily so that the rest of the package still imports under CPython.
"""

from __future__ import annotations

from typing import Any

import js  # type: ignore[import-not-found]
from pyodide.ffi import JsProxy, jsnull, to_js  # type: ignore[import-not-found]

__all__ = ["JsProxy", "is_nullish", "js", "js_object", "to_py"]


def js_object(value: Any) -> Any:
    """Convert Python dicts/lists (recursively) into plain JS objects/arrays.

    JsProxy values inside are passed through untouched, so GPU objects and ArrayBuffers
    can sit in a result dict without being copied.
    """
    return to_js(value, dict_converter=js.Object.fromEntries, create_pyproxies=False)


def is_nullish(value: Any) -> bool:
    """True for JS ``null`` and ``undefined`` (which arrive as ``jsnull`` and ``None``)."""
    return value is None or value is jsnull


def to_py(value: Any) -> Any:
    """Convert a JS value to Python containers, with JS ``null`` as ``None`` like ``undefined``."""
    return _nulls_to_none(value.to_py() if isinstance(value, JsProxy) else value)


def _nulls_to_none(value: Any) -> Any:
    if value is jsnull:
        return None
    if isinstance(value, dict):
        return {key: _nulls_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nulls_to_none(item) for item in value]
    return value
