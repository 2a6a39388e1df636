"""Storage-test fixtures: a multi-shard model behind a fault-injecting server, fresh browsers.

The model is a small random Llama whose shards are capped at 3 MiB, so it has several
multi-block shards (1 MiB blocks) and a tensor split across shards: enough to exercise
block-level resume, per-shard sources and parallel loading in seconds.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from tools.fault_server import FaultState, fault_server

from doppler.convert.convert import convert
from doppler.format.plan import make_plan
from harness.browser import BASE_FLAGS, CHROMEDRIVER, CHROMIUM, WEBGPU_FLAGS, open_app
from harness.tiny_models import CONFIGS, make_model

sys.path.insert(0, str(Path(__file__).parent))  # storage_helpers (importlib mode)

SHARD_CAP = 3 << 20
RANGED_BLOCK = 4096
BIG = {
    **CONFIGS["llama"],
    "vocab_size": 2048,
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def convert_capped(hf: Path, out: Path, **options: Any) -> Path:
    """Convert with shards capped at ``SHARD_CAP`` bytes instead of 64 MiB."""
    with mock.patch("doppler.convert.writer.make_plan", partial(make_plan, max_shard=SHARD_CAP)):
        return convert(hf, out, progress=False, **options)


def add_mirrors(model: Path, mirrors: list[str]) -> None:
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["mirrors"] = mirrors
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    (model / "manifest.json").write_text(text)


@pytest.fixture(scope="session")
def storage_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``big/`` (multi-shard), ``small/`` (one shard) and ``ranged/`` (``big``'s weights
    with 4 KiB blocks, so a range's block cover is a true sub-range of a shard) models."""
    root = tmp_path_factory.mktemp("storage-models")
    hf = tmp_path_factory.mktemp("storage-hf")
    with mock.patch.dict(CONFIGS, {"storage_big": BIG}):
        convert_capped(make_model("storage_big", hf / "big"), root / "big")
    convert_capped(hf / "big", root / "ranged", block_size=RANGED_BLOCK)
    convert(make_model("llama", hf / "small", seed=1), root / "small", progress=False)
    return root


@pytest.fixture(scope="session")
def served(storage_root: Path) -> Iterator[tuple[str, FaultState]]:
    """The models on a fault server; ``big``'s and ``ranged``'s manifests name mirrors
    ``m2`` and ``m3``."""
    with fault_server(storage_root) as (url, state):
        for model in ("big", "ranged"):
            add_mirrors(storage_root / model, [f"{url}m2/{model}/", f"{url}m3/{model}/"])
        yield url, state


@pytest.fixture
def faults(served: tuple[str, FaultState]) -> Iterator[FaultState]:
    """The server's fault state, cleared before and after each test."""
    _, state = served
    with state.lock:
        state.faults.clear()
        state.log.clear()
    yield state
    with state.lock:
        state.faults.clear()


@pytest.fixture
def models_url(served: tuple[str, FaultState]) -> str:
    return served[0]


def fresh_browser(prefs: dict[str, Any] | None = None) -> webdriver.Chrome:
    """Headless Chromium with WebGPU and a fresh profile (``prefs``: profile settings)."""
    profile = tempfile.mkdtemp(prefix="doppler-storage-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*BASE_FLAGS, *WEBGPU_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if prefs:
        options.add_experimental_option("prefs", prefs)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(300)
    driver.doppler_profile = profile
    return driver


@pytest.fixture
def browser_factory() -> Iterator[Any]:
    """Open fresh browsers on the app; each is quit and its profile deleted after the test."""
    drivers: list[webdriver.Chrome] = []

    def start(site_url: str, prefs: dict[str, Any] | None = None) -> webdriver.Chrome:
        driver = fresh_browser(prefs)
        drivers.append(driver)
        reply = open_app(driver, site_url + "index.html")
        assert "ok" in reply, f"the app failed to boot: {reply}"
        return driver

    yield start
    for driver in drivers:
        driver.quit()
        shutil.rmtree(driver.doppler_profile, ignore_errors=True)
