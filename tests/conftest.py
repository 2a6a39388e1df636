"""Session fixtures: the built site on a loopback server, one shared browser, one app boot."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import build  # noqa: E402
from tools.static_server import serving  # noqa: E402

from harness.browser import chromium, open_app, run_async  # noqa: E402
from harness.kernels import KernelHarness  # noqa: E402


@pytest.fixture(scope="session")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The static site, built once per test session into its own folder (no default model,
    whatever a developer's dist/ holds)."""
    return build.build(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="session")
def site_url(site_dir: Path) -> Iterator[str]:
    """The built site served with Range support on a free loopback port."""
    with serving(site_dir) as url:
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium with SwiftShader WebGPU and a fresh profile, shared."""
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="session")
def app(browser: Any, site_url: str) -> Any:
    """The app page booted once (Pyodide + GPU); tests drive ``window.doppler`` through it."""
    reply = open_app(browser, site_url + "index.html")
    assert "ok" in reply, f"the app failed to boot: {reply}"
    return browser


@pytest.fixture(scope="session")
def kernels(app: Any) -> KernelHarness:
    return KernelHarness(app)


@pytest.fixture(scope="session")
def kernels_without_subgroups(app: Any) -> KernelHarness:
    """A second Doppler in the same page, on a device without ``subgroups``: the fallback."""
    run_async(
        app,
        """
        const { Doppler } = await import('./app/doppler.js');
        window.dopplerNoSubgroups = await Doppler.create({disableFeatures: ['subgroups']});
        """,
    )
    return KernelHarness(app, "dopplerNoSubgroups")


@pytest.fixture(params=["subgroups", "no-subgroups"])
def kernel_variants(request: pytest.FixtureRequest) -> KernelHarness:
    """Both variants of a kernel that has a subgroup fast path."""
    name = "kernels" if request.param == "subgroups" else "kernels_without_subgroups"
    return request.getfixturevalue(name)
