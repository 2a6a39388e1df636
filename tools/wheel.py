"""Write pure-Python wheels with zipfile.

A pure wheel is a zip with three metadata files; writing it directly keeps ``build.py``
fast, deterministic and offline (no build backend, no isolated environment to download).
Pyodide installs these with ``loadPackage(url)``.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Mapping
from pathlib import Path

_EPOCH = (1980, 1, 1, 0, 0, 0)


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def write_wheel(
    out_dir: Path,
    name: str,
    version: str,
    files: Mapping[str, bytes],
    requires: tuple[str, ...] = (),
    summary: str = "",
) -> Path:
    """Write ``{name}-{version}-py3-none-any.whl`` holding ``files`` (archive path → bytes)."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if summary:
        metadata.append(f"Summary: {summary}")
    metadata += [f"Requires-Dist: {req}" for req in requires]
    entries = dict(sorted(files.items()))
    entries[f"{info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    entries[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: doppler-build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in entries.items()]
    record.append(f"{info}/RECORD,,")
    entries[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in entries.items():
            archive.writestr(zipfile.ZipInfo(path, _EPOCH), data, zipfile.ZIP_DEFLATED)
    return target


def package_files(root: Path, package: str) -> dict[str, bytes]:
    """Collect a package's sources (``.py`` and ``py.typed``) as wheel entries."""
    files: dict[str, bytes] = {}
    for path in sorted((root / package).rglob("*")):
        if path.is_file() and (path.suffix == ".py" or path.name == "py.typed"):
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files
