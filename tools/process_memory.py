"""Peak resident memory of a browser's processes, sampled from outside through ``/proc``.

A page cannot see its own process's RSS, and a budget test must not trust the engine's own
books, so the benchmark watches the browser's process tree (Linux only) and reports the peak
RSS per Chromium process type (``renderer``, which runs the page and its workers,
``gpu-process``, ``browser``, ...).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _kind(pid: int) -> str:
    """Chromium's ``--type=`` of a process (children rewrite their title, so the flags may
    arrive space-joined in one argument)."""
    try:
        command = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return "gone"
    found = re.search(rb"--type=(\S+)", command)
    return found.group(1).decode() if found else "browser"


def _rss(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(root: int) -> dict[str, int]:
    """RSS bytes summed per process type over ``root`` and its descendants."""
    tree, out, todo = _children(), {}, [root]
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        kind = _kind(pid)
        out[kind] = out.get(kind, 0) + _rss(pid)
    return out


class PeakRss:
    """Samples :func:`tree_rss` every ``interval`` seconds on a thread; ``peak`` per type."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        self.root, self.interval = root, interval
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for kind, rss in tree_rss(self.root).items():
                self.peak[kind] = max(self.peak.get(kind, 0), rss)
