"""The page boots Python in a worker on WebGPU and reports what it found."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_status_reports_python_pyodide_and_swiftshader(app):
    status = app.execute_script("return window.doppler.status()")
    assert status["python"].startswith("3.14")
    assert status["pyodide"] == "314.0.7"
    gpu = status["gpu"]
    assert gpu["architecture"] == "swiftshader"
    assert {"vendor", "architecture", "features", "limits"} <= gpu.keys()
    assert "subgroups" in gpu["features"]
    # The device got the adapter's maximum, not the 128 MiB default.
    assert gpu["limits"]["maxStorageBufferBindingSize"] >= 1 << 30
    assert status["gpuError"] is None


def test_page_shows_python_and_adapter(app):
    text = app.find_element("id", "python-version").text
    assert text.startswith("Python 3.14")
    assert "swiftshader" in app.find_element("id", "gpu-adapter").text
    assert app.find_element("id", "boot-state").get_attribute("data-state") == "ready"
