"""The development server answers HTTP Range requests like real static hosts."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from tools.static_server import parse_range, serving


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-1000", 100, (0, 99)),
        ("bytes=50-1000", 100, (50, 99)),
        ("bytes=100-", 100, None),
        ("bytes=9-3", 100, None),
        ("bytes=-0", 100, None),
        ("bytes=0-1,5-6", 100, None),
        ("items=0-1", 100, None),
    ],
)
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


def _get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_server_answers_ranges(tmp_path):
    data = bytes(range(256)) * 40
    (tmp_path / "shard.bin").write_bytes(data)
    with serving(tmp_path) as url:
        status, headers, body = _get(url + "shard.bin")
        assert (status, body) == (200, data)
        assert headers["Accept-Ranges"] == "bytes"

        status, headers, body = _get(url + "shard.bin", {"Range": "bytes=1000-1999"})
        assert status == 206
        assert headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
        assert body == data[1000:2000]

        status, headers, body = _get(url + "shard.bin", {"Range": "bytes=-16"})
        assert (status, body) == (206, data[-16:])

        status, headers, _ = _get(url + "shard.bin", {"Range": f"bytes={len(data)}-"})
        assert status == 416
        assert headers["Content-Range"] == f"bytes */{len(data)}"
