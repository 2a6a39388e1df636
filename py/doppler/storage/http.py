"""Fetch content-addressed files over HTTP and verify them before anyone uses them.

Bytes stay in JS ``ArrayBuffer``s (Python holds proxies) and are hashed with the browser's
native SHA-256 (``crypto.subtle``), so a 64 MiB shard never crosses into the wasm heap.
Sources are tried in order (the manifest's own folder, then its mirrors); a source that
fails or serves bad bytes is skipped, and the error names the file when none is good.
"""

from __future__ import annotations

from doppler.errors import DopplerError
from doppler.jsffi import JsProxy, js, js_object


class FetchError(DopplerError):
    """A file could not be fetched from any source, or every copy failed verification."""

    code = "fetch_failed"


class IntegrityError(FetchError):
    """Bytes arrived but their SHA-256 is not the one their name promises."""

    code = "hash_mismatch"


async def fetch_buffer(url: str) -> JsProxy:
    """GET ``url`` without the HTTP cache (we keep our own verified copy); an ArrayBuffer."""
    try:
        response = await js.fetch(url, js_object({"cache": "no-store"}))
    except Exception as err:
        raise FetchError(f"could not fetch {url}: {err}") from err
    if not response.ok:
        raise FetchError(f"could not fetch {url}: HTTP {response.status}")
    return await response.arrayBuffer()


async def sha256_hex(buffer: JsProxy) -> str:
    digest = await js.crypto.subtle.digest("SHA-256", buffer)
    return bytes(js.Uint8Array.new(digest).to_py()).hex()


async def fetch_verified(bases: list[str], name: str, size: int) -> JsProxy:
    """Fetch ``<base><name>.bin`` from the first source whose bytes hash to ``name``."""
    problems: list[str] = []
    bad_bytes = 0
    for base in bases:
        url = f"{base}{name}.bin"
        try:
            buffer = await fetch_buffer(url)
        except FetchError as err:
            problems.append(str(err))
            continue
        if buffer.byteLength != size:
            problem = f"{url}: {buffer.byteLength} bytes, expected {size}"
        elif await sha256_hex(buffer) != name:
            problem = f"{url}: SHA-256 mismatch"
        else:
            return buffer
        problems.append(problem)
        bad_bytes += 1
    error = IntegrityError if bad_bytes == len(bases) else FetchError
    raise error(f"shard {name}: no good copy ({'; '.join(problems)})")
