"""A Range-speaking test server that injects faults and logs every request.

Every mirror is a first path segment over the same folder: ``<url>m1/model/x.bin`` and
``<url>m2/model/x.bin`` serve the same file, so one server plays several hosts (a model's
own folder and its mirrors) with different faults. Faults are matched in order, by mirror
and file suffix, and may apply only a limited number of times:

    status        answer ``status`` (404, 503, ...) with no body
    html          answer 200 with an HTML page (a host's "not found" page, a captive portal)
    drop          send headers for the whole body, then close the connection once the
                  file's byte ``at`` would be sent
    flip          flip one bit of the file's byte ``at``
    truncate      serve the file cut to its first ``at`` bytes (a short copy on the host)
    slow          send at ``rate`` bytes per second
    ignore_range  answer 200 with the whole file to a Range request

The log records (mirror, path, Range header, status, bytes sent) for each request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from tools.static_server import RangeRequestHandler, make_server, parse_range

HTML_PAGE = b"<!doctype html><html><body><h1>Page not found</h1></body></html>"
DROP_PAUSE_S = 0.5
KINDS = ("status", "html", "drop", "flip", "truncate", "slow", "ignore_range")


@dataclass
class Fault:
    kind: str
    mirror: str | None = None  # None: every mirror
    suffix: str = ".bin"  # files whose path ends with this
    times: int | None = None  # None: every matching request
    status: int = 503
    at: int = 0
    rate: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {KINDS}")


@dataclass(frozen=True)
class Request:
    mirror: str
    path: str
    range: str | None
    status: int
    sent: int


class FaultState:
    """The faults to inject and the requests seen; shared by all handler threads."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.log: list[Request] = []
        self.sending: dict[str, int] = {}  # request path -> file offset sent up to
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def take(self, mirror: str, path: str) -> Fault | None:
        """The first fault that applies to this request (using up one of its ``times``)."""
        with self.lock:
            for fault in self.faults:
                if fault.mirror not in (None, mirror) or not path.endswith(fault.suffix):
                    continue
                if fault.times is not None:
                    if fault.times <= 0:
                        continue
                    fault.times -= 1
                return fault
        return None

    def record(self, request: Request) -> None:
        with self.lock:
            self.log.append(request)

    def requests(self, suffix: str = ".bin", mirror: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.log if r.path.endswith(suffix) and mirror in (None, r.mirror)]


class FaultHandler(RangeRequestHandler):
    state: FaultState  # set on the per-server subclass

    def do_OPTIONS(self) -> None:  # CORS preflight, for hosts where Range is not safelisted
        self.send_response(HTTPStatus.NO_CONTENT)
        self.send_header("Access-Control-Allow-Headers", "Range")
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        mirror, _, rest = self.path.lstrip("/").partition("/")
        rest = rest.split("?", 1)[0]
        path = Path(self.directory) / rest
        if ".." in Path(rest).parts or not path.is_file():
            self._reply(mirror, rest, HTTPStatus.NOT_FOUND, b"", body)
            return
        fault = self.state.take(mirror, rest)
        kind = fault.kind if fault else None
        if fault and kind == "status":
            self._reply(mirror, rest, fault.status, b"", body)
            return
        if kind == "html":
            self._reply(mirror, rest, HTTPStatus.OK, HTML_PAGE, body, "text/html; charset=utf-8")
            return
        data = path.read_bytes()
        if kind == "truncate":
            data = data[: fault.at]
        elif kind == "flip":
            data = bytearray(data)
            data[fault.at] ^= 0x01
        header = self.headers.get("Range")
        if header is None or kind == "ignore_range":
            self._reply(mirror, rest, HTTPStatus.OK, data, body, fault=fault)
            return
        span = parse_range(header, len(data))
        if span is None:
            unsatisfiable = HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
            extra = {"Content-Range": f"bytes */{len(data)}"}
            self._reply(mirror, rest, unsatisfiable, b"", body, **extra)
            return
        start, end = span
        self._reply(
            mirror,
            rest,
            HTTPStatus.PARTIAL_CONTENT,
            data[start : end + 1],
            body,
            fault=fault,
            first=start,
            **{"Content-Range": f"bytes {start}-{end}/{len(data)}"},
        )

    def _reply(
        self,
        mirror: str,
        path: str,
        status: int,
        data: bytes | bytearray,
        body: bool,
        content_type: str | None = None,
        *,
        fault: Fault | None = None,
        first: int = 0,
        **headers: str,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type or self.guess_type(path))
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        sent = self._write(data, fault, first) if body else 0
        self.state.record(Request(mirror, path, self.headers.get("Range"), int(status), sent))

    def _write(self, data: bytes | bytearray, fault: Fault | None, first: int) -> int:
        """Send the body, applying a drop or slow fault; returns the bytes sent."""
        stop = len(data)
        if fault and fault.kind == "drop" and first <= fault.at < first + len(data):
            stop = fault.at - first
        chunk = max(1, fault.rate // 20) if fault and fault.kind == "slow" else 1 << 16
        sent = 0
        try:
            while sent < stop and not self.state.stopping.is_set():
                piece = data[sent : min(stop, sent + chunk)]
                self.wfile.write(piece)
                sent += len(piece)
                self.state.sending[self.path] = first + sent
                if fault and fault.kind == "slow":
                    self.wfile.flush()
                    time.sleep(0.05)
            self.wfile.flush()
            if sent < len(data):
                # let the client consume what was sent before the connection goes: a browser
                # may discard bytes still buffered when it sees the connection fail
                time.sleep(DROP_PAUSE_S)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if sent < len(data):
            self.close_connection = True
        return sent


@contextmanager
def fault_server(root: Path) -> Iterator[tuple[str, FaultState]]:
    """Serve ``root`` under any mirror prefix on a free loopback port; yields (url, state)."""
    state = FaultState()
    handler = type("BoundFaultHandler", (FaultHandler,), {"state": state})
    server = make_server(root, handler=handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", state
    finally:
        state.stopping.set()
        server.shutdown()
        server.server_close()
