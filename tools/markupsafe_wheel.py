"""Build a pure-Python MarkupSafe wheel for Pyodide from the PyPI sdist.

jinja2 (chat templates) needs MarkupSafe, which has no pure wheel on PyPI and whose sdist
compiles a C ``_speedups`` extension. MarkupSafe falls back to ``_native`` when that
extension is missing, so the wheel is simply the package sources without the C file.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from email.parser import Parser
from pathlib import Path

from tools.wheel import write_wheel

VERSION = "3.0.3"


class MarkupSafeWheelError(RuntimeError):
    """The MarkupSafe sdist could not be fetched or does not look as expected."""


def fetch_sdist(cache_dir: Path, version: str = VERSION) -> Path:
    """The sdist tarball in ``cache_dir``, downloaded with pip on first use."""
    target = cache_dir / f"markupsafe-{version}.tar.gz"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
    cmd += [f"markupsafe=={version}", "-d", str(cache_dir), "--quiet"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not target.is_file():
        raise MarkupSafeWheelError(f"pip download markupsafe=={version} failed: {result.stderr}")
    return target


def build_pure_markupsafe_wheel(
    out_dir: Path, cache_dir: Path | None = None, version: str = VERSION
) -> Path:
    """Write ``markupsafe-<version>-py3-none-any.whl`` into ``out_dir`` and return its path.

    The sdist comes from ``cache_dir`` when it is already there (``pip download`` otherwise).
    """
    sdist = fetch_sdist(cache_dir or out_dir, version)
    root = f"markupsafe-{version}"
    files: dict[str, bytes] = {}
    with tarfile.open(sdist) as archive:
        members = {m.name: m for m in archive.getmembers() if m.isfile()}

        def read(name: str) -> bytes:
            member = members.get(f"{root}/{name}")
            if member is None:
                raise MarkupSafeWheelError(f"{sdist.name}: missing {name}")
            return archive.extractfile(member).read()  # type: ignore[union-attr]

        prefix = f"{root}/src/markupsafe/"
        for name in sorted(members):
            if name.startswith(prefix) and not name.endswith(".c"):
                files["markupsafe/" + name[len(prefix) :]] = read(name[len(root) + 1 :])
        metadata = Parser().parsestr(read("PKG-INFO").decode())
        license_text = read("LICENSE.txt")
    if "markupsafe/_native.py" not in files or metadata["Version"] != version:
        raise MarkupSafeWheelError(f"{sdist.name}: not a MarkupSafe {version} sdist")
    files[f"markupsafe-{version}.dist-info/licenses/LICENSE.txt"] = license_text
    return write_wheel(out_dir, "markupsafe", version, files, summary=metadata["Summary"])
