"""The benchmark's outside view of memory: RSS per process type over a process tree."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tools.process_memory import PeakRss, tree_rss


def test_tree_rss_counts_descendants_by_their_type_flag():
    # A child whose command line carries a Chromium-style --type= flag.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; b = bytearray(64 << 20); time.sleep(30)",
            "--type=renderer",
        ]
    )
    try:
        time.sleep(1.0)
        found = tree_rss(os.getpid())
        assert found["renderer"] > 64 << 20  # the child's 64 MiB is resident
        assert found["browser"] > 0  # this process has no --type flag
        with PeakRss(os.getpid(), interval=0.05) as peak:
            time.sleep(0.3)
        assert peak.peak["renderer"] >= found["renderer"] // 2
    finally:
        child.kill()
        child.wait()
