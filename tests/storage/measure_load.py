"""Measure a model's load from a local server: time, renderer/GPU process RSS, wasm heap.

    PYTHONPATH=py .venv/bin/python tests/storage/measure_load.py MODEL_DIR [--generate]

Loads the model twice in one fresh browser profile (first load from the network, second
from OPFS) while sampling, from outside, the RSS of Chromium's renderer processes (where
the page, its worker and the JS shard buffers live) and of its GPU process (SwiftShader
keeps GPU buffers there). Pyodide's wasm memory size comes from the progress events.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "py")]

import build  # noqa: E402
from tools.static_server import serving  # noqa: E402

from harness.browser import chromium, open_app, run_async  # noqa: E402

LOAD = """
const [url, generate] = args;
const events = [];
const t0 = performance.now();
let info;
try {
  info = await doppler.load(url, {contextLength: 64, onProgress: (e) => events.push(e)});
} catch (e) {
  return {error: {code: e.code, message: e.message}, events: events.slice(-3),
          ms: performance.now() - t0, maxHeap: Math.max(0, ...events.map((e) => e.heapBytes))};
}
const ms = performance.now() - t0;
let tokens = null;
if (generate) {
  for await (const e of doppler.generate({tokenIds: [2, 818, 5279]}, {maxTokens: 4}))
    if (e.type === 'done') tokens = e.tokenIds;
}
return {info, ms, tokens, last: events[events.length - 1],
        maxHeap: Math.max(...events.map((e) => e.heapBytes))};
"""


class Sampler(threading.Thread):
    """Peak RSS of Chromium's renderer and GPU processes, sampled every 50 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = {"renderer": 0, "gpu": 0}
        self.running = True

    def run(self) -> None:
        while self.running:
            totals = {"renderer": 0, "gpu": 0}
            for proc in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if "doppler-profile-" not in cmd:
                    continue
                for kind in totals:
                    if f"--type={kind}" in cmd or (kind == "gpu" and "--type=gpu-process" in cmd):
                        totals[kind] += proc.info["memory_info"].rss
            for kind, value in totals.items():
                self.peak[kind] = max(self.peak[kind], value)
            time.sleep(0.05)

    def reset(self) -> dict[str, int]:
        peak, self.peak = dict(self.peak), {"renderer": 0, "gpu": 0}
        return peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--generate", action="store_true")
    args = parser.parse_args()
    site = build.build(Path(tempfile.mkdtemp(prefix="doppler-site-")))
    with serving(site) as site_url, serving(args.model) as model_url, chromium() as driver:
        assert "ok" in open_app(driver, site_url + "index.html")
        sampler = Sampler()
        sampler.start()
        time.sleep(0.5)
        idle = sampler.reset()
        results = {"idle_rss": idle}
        for label in ("first", "cached"):
            reply = run_async(driver, LOAD, model_url + "manifest.json", args.generate)
            reply["peak_rss"] = sampler.reset()
            results[label] = reply
        sampler.running = False
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
