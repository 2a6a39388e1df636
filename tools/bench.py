"""``python build.py bench``: run the benchmark page in a headless browser and print its JSON.

The page (``static/bench.html``) loads a model, warms up, runs the generation twice (the
figures are the second run's) and POSTs them back to the server here. ``--model`` is a
manifest URL or a ``doppler synth`` preset, which is made once (random weights of the real
shapes) into the site's ``models/bench/`` folder. On the device machine pass
``--browser /opt/gpubrowser/chrome`` (which brings its own GPU flags); the default is
Debian's Chromium on SwiftShader.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from tools.process_memory import PeakRss
from tools.static_server import RangeRequestHandler, serving

SYSTEM_CHROMIUM = "/usr/bin/chromium"
SWIFTSHADER_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--use-webgpu-adapter=swiftshader",
    "--enable-features=Vulkan",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)


class ResultHandler(RangeRequestHandler):
    """Serves the site and accepts the page's one POST of results."""

    received: dict[str, Any] = {}  # noqa: RUF012 - replaced per run by make_handler
    arrived: threading.Event = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.update(json.loads(body))
        self.arrived.set()
        self.send_response(204)
        self.end_headers()


def make_handler() -> type[ResultHandler]:
    return type("BenchHandler", (ResultHandler,), {"received": {}, "arrived": threading.Event()})


def synth_model(preset: str, layers: int | None, site: Path, cache: Path) -> str:
    """Make (once) a random-weight model of ``preset``'s shapes; its URL relative to the site."""
    from doppler.convert.synth import synth

    name = f"{preset}-L{layers}" if layers else preset
    made = cache / "bench" / name
    if not (made / "manifest.json").is_file():
        shutil.rmtree(made, ignore_errors=True)
        synth(preset, made, layers=layers, quant="q4_0", seed=0)
    target = site / "models" / "bench" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(made, target)
    return f"models/bench/{name}/manifest.json"


def run(site: Path, model: str, browser: str, query: dict[str, Any], timeout: float) -> dict:
    handler = make_handler()
    # the profile goes with the browser: its helper processes may still be writing there
    profile_dir = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
    with serving(site, handler) as url, profile_dir as profile:
        page = f"{url}bench.html?model={quote(model)}&{urlencode(query)}"
        command = [browser, page]
        if browser == SYSTEM_CHROMIUM:
            command += [*SWIFTSHADER_FLAGS, f"--user-data-dir={profile}"]
        started = time.monotonic()
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            with PeakRss(process.pid) as memory:
                arrived = handler.arrived.wait(timeout)
            if not arrived:
                raise SystemExit(f"no benchmark result within {timeout:.0f} s")
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the browser and all its processes
            process.wait()
        result = dict(handler.received)
        result["peakRssBytes"] = memory.peak  # per Chromium process type, sampled outside
        result["wallSeconds"] = time.monotonic() - started
        result["browser"] = browser
        return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="manifest URL or synth preset")
    parser.add_argument("--layers", type=int, default=None, help="synth: keep only N layers")
    parser.add_argument("--browser", default=SYSTEM_CHROMIUM)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--no-build", action="store_true", help="use dist/ as it is")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--expert-fraction",
        type=float,
        help="MoE: after the resident run, run again with a GPU budget for this share of the"
        " experts (paged)",
    )
    parser.add_argument("--ram-budget", type=int, default=0, help="MoE paged run: RAM tier bytes")
    parser.add_argument(
        "--gpu-budget", type=int, help="MoE: run only paged, with this many GPU bytes"
    )
    parser.add_argument("--policy", default="cycle-lfu", help="MoE paged run: cycle-lfu or lru")
    parser.add_argument("--prefill-tokens", type=int, help="prompt tokens per prefill pass")
    parser.add_argument(
        "--sampling",
        default="greedy",
        help="greedy, or TEMPERATURE,TOP_K,TOP_P (the chat page's defaults: 0.7,40,0.95)",
    )


def main(args: argparse.Namespace, site: Path, cache: Path) -> None:
    model = args.model
    if "/" not in model and not model.endswith(".json"):
        model = synth_model(model, args.layers, site, cache)
    query: dict[str, Any] = {"prompt": args.prompt_tokens, "decode": args.decode_tokens}
    if args.sampling != "greedy":
        temperature, top_k, top_p = args.sampling.split(",")
        query.update(temperature=float(temperature), topK=int(top_k), topP=float(top_p))
    if args.prefill_tokens is not None:
        query["prefillTokens"] = args.prefill_tokens
    if args.expert_fraction is not None:
        query["expertFraction"] = args.expert_fraction
    if args.gpu_budget is not None:
        query["gpuBudget"] = args.gpu_budget
    if args.expert_fraction is not None or args.gpu_budget is not None:
        query.update(ramBudget=args.ram_budget, policy=args.policy)
    result = run(site, model, args.browser, query, args.timeout)
    text = json.dumps(result, indent=1, sort_keys=True)
    print(text, flush=True)
    if args.out:
        args.out.write_text(text)
