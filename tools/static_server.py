"""A static file server that answers HTTP Range requests like real static hosts do.

Python's ``http.server`` ignores ``Range``; DOPPLER resumes shard downloads and fetches
single experts with Range requests, so the development server and the test servers must
speak it (206 with ``Content-Range``, 416 for unsatisfiable ranges). Tests subclass
:class:`RangeRequestHandler` to inject faults and log requests.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

# WebAssembly must be served with its own type for streaming compilation; .mjs as JS.
EXTRA_TYPES = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wgsl": "text/plain; charset=utf-8",
    ".whl": "application/zip",
    ".bin": "application/octet-stream",
    ".json": "application/json",
}


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Return the inclusive byte range a single-range ``Range`` header asks for.

    Returns ``None`` when the range cannot be satisfied (the caller answers 416).
    Multi-range requests are not used by DOPPLER and are treated as unsatisfiable.
    """
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return None
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """Serves files from ``directory`` with Range support and no caching surprises."""

    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map,
        **EXTRA_TYPES,
    }

    def log_message(self, format: str, *args: object) -> None:
        if os.environ.get("DOPPLER_SERVER_LOG"):
            super().log_message(format, *args)

    def end_headers(self) -> None:
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length")
        super().end_headers()

    def send_head(self):  # type: ignore[override]
        header = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if header is None or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        span = parse_range(header, size)
        if span is None:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        start, end = span
        handle = path.open("rb")
        handle.seek(start)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._range_remaining = end - start + 1
        return handle

    def copyfile(self, source, outputfile) -> None:  # type: ignore[override]
        remaining = getattr(self, "_range_remaining", None)
        if remaining is None:
            shutil.copyfileobj(source, outputfile)
            return
        while remaining > 0:
            chunk = source.read(min(1 << 20, remaining))
            if not chunk:
                break
            outputfile.write(chunk)
            remaining -= len(chunk)
        self._range_remaining = None


def make_server(
    root: Path, host: str = "127.0.0.1", port: int = 0, handler=RangeRequestHandler
) -> ThreadingHTTPServer:
    """Bind a threaded server for ``root``; port 0 picks a free port."""

    def factory(*args, **kwargs):
        return handler(*args, directory=str(root), **kwargs)

    server = ThreadingHTTPServer((host, port), factory)
    server.daemon_threads = True
    return server


@contextmanager
def serving(root: Path, handler=RangeRequestHandler) -> Iterator[str]:
    """Serve ``root`` on a free loopback port for the duration of the block; yields the URL."""
    server = make_server(root, handler=handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a folder with HTTP Range support.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    server = make_server(args.root, args.host, args.port)
    print(f"Serving {args.root} at http://{args.host}:{server.server_address[1]}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
