"""Fetch pinned npm packages into a local cache with ``npm pack`` (no node_modules, no CDN).

The site must be self-contained, so build-time assets from npm (the Pyodide core) are
unpacked once into ``.cache/npm/<name>-<version>/`` and copied into ``dist/`` from there.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path


def npm_package(name: str, version: str, cache_dir: Path) -> Path:
    """Return the unpacked ``package/`` folder of ``name@version``, downloading it once."""
    safe = name.replace("@", "").replace("/", "-")
    target = cache_dir / f"{safe}-{version}"
    if (target / "package" / "package.json").is_file():
        return target / "package"
    if shutil.which("npm") is None:
        raise RuntimeError(f"npm is needed to fetch {name}@{version}; install Node.js and npm")
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = cache_dir / f".{safe}-{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    subprocess.run(
        ["npm", "pack", f"{name}@{version}", "--pack-destination", str(staging), "--silent"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (tarball,) = staging.glob("*.tgz")
    with tarfile.open(tarball) as archive:
        archive.extractall(staging, filter="data")
    tarball.unlink()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target / "package"
