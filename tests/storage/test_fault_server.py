"""The fault server itself (CPython): each fault does what the browser tests rely on."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
from tools.fault_server import Fault, fault_server

DATA = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
def server(tmp_path: Path):
    (tmp_path / "f.bin").write_bytes(DATA)
    with fault_server(tmp_path) as (url, state):
        yield url.split("//")[1].rstrip("/"), state


def get(host: str, path: str, headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    try:
        body = response.read()
    except http.client.IncompleteRead as err:
        body = err.partial
    conn.close()
    return response, body


def test_mirrors_serve_the_same_file_with_ranges(server):
    host, state = server
    response, body = get(host, "/m1/f.bin")
    assert (response.status, body) == (200, DATA)
    response, body = get(host, "/m2/f.bin", {"Range": "bytes=100-"})
    assert (response.status, body) == (206, DATA[100:])
    assert response.getheader("Content-Range") == f"bytes 100-{len(DATA) - 1}/{len(DATA)}"
    assert [(r.mirror, r.range, r.sent) for r in state.requests()] == [
        ("m1", None, len(DATA)),
        ("m2", "bytes=100-", len(DATA) - 100),
    ]


def test_faults_apply_by_mirror_and_times(server):
    host, state = server
    state.faults += [Fault("status", mirror="m1", status=404, times=1)]
    assert get(host, "/m1/f.bin")[0].status == 404
    assert get(host, "/m1/f.bin")[0].status == 200
    assert get(host, "/m2/f.bin")[0].status == 200


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (Fault("flip", at=7), lambda r, b: b[7] == DATA[7] ^ 1 and b[8:] == DATA[8:]),
        (Fault("truncate", at=1000), lambda r, b: b == DATA[:1000]),
        (Fault("html"), lambda r, b: r.getheader("Content-Type").startswith("text/html")),
        (Fault("drop", at=5000), lambda r, b: b == DATA[:5000]),
        (Fault("slow", rate=200_000), lambda r, b: b == DATA),
    ],
)
def test_each_fault(server, fault, check):
    host, state = server
    state.faults.append(fault)
    response, body = get(host, "/m1/f.bin")
    assert check(response, body)


def test_ignore_range_answers_200_with_everything(server):
    host, state = server
    state.faults.append(Fault("ignore_range"))
    response, body = get(host, "/m1/f.bin", {"Range": "bytes=100-"})
    assert (response.status, body) == (200, DATA)


def test_unknown_fault_kind_is_refused():
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")
