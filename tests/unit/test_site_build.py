"""The built site is self-contained: relative URLs only, Pyodide core, our wheel, shaders."""

from __future__ import annotations

import json
import re
import zipfile

SCRIPT_URLS = re.compile(
    r"""(?:src|href)=["']([^"']+)["']|import\s*(?:[^'"]*from\s*)?['"]([^'"]+)['"]"""
)


def test_dist_has_everything_the_worker_loads(site_dir):
    for name in ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip"):
        assert (site_dir / "pyodide" / name).is_file()
    install = json.loads((site_dir / "wheels" / "index.json").read_text())["install"]
    assert [name.split("-")[0] for name in install] == ["markupsafe", "jinja2", "doppler"]
    with zipfile.ZipFile(site_dir / "wheels" / install[-1]) as wheel:
        names = wheel.namelist()
    assert "doppler/worker/main.py" in names
    assert any(name.endswith(".dist-info/RECORD") for name in names)
    with zipfile.ZipFile(site_dir / "wheels" / install[0]) as wheel:
        assert not any(name.endswith(".c") for name in wheel.namelist())  # pure MarkupSafe
    shaders = json.loads((site_dir / "shaders" / "bundle.json").read_text())
    assert {"rmsnorm.wgsl", "matvec_quant.wgsl"} <= shaders.keys()


def test_only_relative_urls(site_dir):
    """No absolute or root-relative URL: the site must work from any host and sub-path."""
    files = [site_dir / "index.html", *sorted((site_dir / "app").glob("*.js"))]
    for path in files:
        for match in SCRIPT_URLS.finditer(path.read_text()):
            url = match.group(1) or match.group(2)
            assert not url.startswith(("/", "http:", "https:", "//")), f"{path.name}: {url}"
