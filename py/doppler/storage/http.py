"""Plain HTTP for the one file that is not content-addressed: the root manifest.

Everything else (index shards, tokenizer, weight shards) goes through :mod:`tier`, which
verifies it by its name; the manifest's bytes *are* the model's identity, so the caller
hashes what arrives. ``cache: 'no-store'``: the browser's HTTP cache keeps no second copy.
"""

from __future__ import annotations

from doppler.jsffi import js, js_object
from doppler.storage.errors import FetchError


async def fetch_bytes(url: str) -> bytes:
    """GET ``url`` and return its body (small documents only: it enters the wasm heap)."""
    try:
        response = await js.fetch(url, js_object({"cache": "no-store"}))
    except Exception as err:
        raise FetchError(f"could not fetch {url}: {err}") from err
    if not response.ok:
        raise FetchError(f"could not fetch {url}: HTTP {response.status}")
    return (await response.arrayBuffer()).to_bytes()
