"""Clear messages, never a hang: no WebGPU, no adapter, Pyodide missing."""

from __future__ import annotations

import pytest

from harness.browser import BASE_FLAGS, chromium, open_app

pytestmark = pytest.mark.browser


def _message(driver) -> str:
    return driver.find_element("id", "message").text


def test_browser_without_webgpu_reports_it(site_url):
    """A page served over plain HTTP from a non-local host has no navigator.gpu at all."""
    port = site_url.rsplit(":", 1)[1].rstrip("/")
    with chromium(("--host-resolver-rules=MAP nogpu.test 127.0.0.1",)) as driver:
        reply = open_app(driver, f"http://nogpu.test:{port}/index.html")
        assert "ok" in reply, reply
        status = reply["ok"]
        assert status["gpu"] is None
        assert status["gpuError"]["code"] == "no_webgpu"
        assert status["python"].startswith("3.14")
        assert "secure context" in _message(driver)
        assert driver.find_element("id", "boot-state").get_attribute("data-state") == "failed"


def test_no_gpu_adapter_reports_it(site_url):
    """Without --enable-unsafe-webgpu, headless Chromium here has WebGPU but no adapter."""
    assert "--enable-unsafe-webgpu" not in BASE_FLAGS
    with chromium(()) as driver:
        reply = open_app(driver, site_url + "index.html")
        status = reply["ok"]
        assert status["gpu"] is None
        assert status["gpuError"]["code"] == "adapter_failed"
        assert "no GPU adapter" in _message(driver)


def test_pyodide_failure_is_reported(site_url):
    """A broken Pyodide location fails fast with a message instead of hanging."""
    with chromium() as driver:
        reply = open_app(driver, site_url + "index.html?pyodide=missing/")
        assert reply == {"error": {"code": "pyodide_failed", "message": reply["error"]["message"]}}
        assert "Pyodide" in _message(driver)
