"""The pure MarkupSafe wheel installs by unzipping and drives jinja2 without ``_speedups``."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jinja2
import pytest
from tools.markupsafe_wheel import VERSION, build_pure_markupsafe_wheel

ROOT = Path(__file__).resolve().parents[2]
# pip fills this once (network); later runs and CI caches read it offline.
SDIST_CACHE = ROOT / ".cache" / "sdists"

CHECK = """
import importlib.util, sys
import markupsafe, jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
assert markupsafe.__file__.startswith(sys.argv[1]), markupsafe.__file__
assert importlib.util.find_spec("markupsafe._speedups") is None
assert markupsafe.escape("<a href='x'>&</a>") == "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
env = ImmutableSandboxedEnvironment(autoescape=True)
assert env.from_string("{{ x }}|{{ x|safe }}").render(x="<b>") == "&lt;b&gt;|<b>"
print("ok", markupsafe._escape_inner.__module__)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pure_markupsafe_wheel(tmp_path_factory.mktemp("wheel"), SDIST_CACHE)


def test_wheel_layout_and_record(wheel: Path) -> None:
    assert wheel.name == f"markupsafe-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = f"markupsafe-{VERSION}.dist-info"
        assert "markupsafe/_native.py" in names and "markupsafe/__init__.py" in names
        assert not [n for n in names if n.endswith((".c", ".so", ".pyd"))]
        assert "Tag: py3-none-any" in archive.read(f"{info}/WHEEL").decode()
        assert f"Version: {VERSION}" in archive.read(f"{info}/METADATA").decode()
        record = archive.read(f"{info}/RECORD").decode().splitlines()
        listed = {}
        for line in record:
            path, digest, size = line.rsplit(",", 2)
            listed[path] = (digest, size)
        assert set(listed) == set(names)
        for name in names:
            if name.endswith("RECORD"):
                continue
            data = archive.read(name)
            sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert listed[name] == (f"sha256={sha}", str(len(data))), name


def test_wheel_runs_jinja2_without_speedups(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    shutil.copytree(Path(jinja2.__file__).parent, site / "jinja2")
    # -S: no site-packages, so only the unzipped wheel can provide markupsafe.
    result = subprocess.run(
        [sys.executable, "-S", "-c", CHECK, str(site)],
        env={"PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "markupsafe._native"]
