"""Storage-test helpers: load with progress capture, read OPFS back from the page, generate,
and the files of the test models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.browser import PageError, run_async

# Loads args[0]; returns {info, events} or {error: {code, message}, events}.
LOAD = """
const [url] = args;
const events = [];
window.progressEvents = events;
try {
  const info = await doppler.load(url, {contextLength: 32, onProgress: (e) => events.push(e)});
  return {info, events};
} catch (e) {
  return {error: {code: e.code, message: e.message}, events};
}
"""

# What OPFS holds under doppler/: {shards: {name: size}, partial: {file: size},
# sidecars: {name: parsed JSON}, models: [parsed record]}, read from the page (not the
# worker); a file that is not valid JSON comes back as its text, so tests can see it.
OPFS = """
const out = {shards: {}, partial: {}, sidecars: {}, models: []};
let root;
try {
  root = await (await navigator.storage.getDirectory()).getDirectoryHandle('doppler');
} catch (e) { return out; }
for (const dir of ['shards', 'partial', 'models']) {
  const handle = await root.getDirectoryHandle(dir).catch(() => null);
  if (!handle) continue;
  for await (const [name, file] of handle.entries()) {
    const blob = await file.getFile();
    if (dir === 'shards') out.shards[name.replace(/\\.bin$/, '')] = blob.size;
    else if (dir === 'models') out.models.push(await blob.text());
    else if (name.endsWith('.json')) out.sidecars[name.slice(0, -5)] = await blob.text();
    else out.partial[name] = blob.size;
  }
}
return out;
"""

GENERATE = """
let done = null;
for await (const e of doppler.generate({tokenIds: [3, 17, 99, 42]}, {maxTokens: 4, temperature: 0}))
  if (e.type === 'done') done = e;
return done.tokenIds;
"""


def load(driver: Any, url: str) -> dict[str, Any]:
    return run_async(driver, LOAD, url)


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def opfs(driver: Any) -> dict[str, Any]:
    found = run_async(driver, OPFS)
    found["models"] = [_parsed(text) for text in found["models"]]
    found["sidecars"] = {name: _parsed(text) for name, text in found["sidecars"].items()}
    return found


def generate(driver: Any) -> list[int]:
    return run_async(driver, GENERATE)


def request(driver: Any, kind: str, payload: dict[str, Any] | None = None) -> Any:
    """``doppler.request(kind, payload)``; raises :class:`PageError` with the error code."""
    return run_async(driver, "return await doppler.request(args[0], args[1]);", kind, payload or {})


def model_files(model: Path) -> dict[str, int]:
    """Every ``.bin`` file of a model folder: name -> size."""
    return {p.stem: p.stat().st_size for p in model.glob("*.bin")}


def weight_shards(model: Path) -> dict[str, int]:
    """The weight shards of a model folder (files the manifest does not name): name -> size."""
    manifest = json.loads((model / "manifest.json").read_text())
    named = {ref["name"] for ref in manifest["index"]}
    if manifest["tokenizer"]:
        named.add(manifest["tokenizer"]["name"])
    return {name: size for name, size in model_files(model).items() if name not in named}


__all__ = ["PageError", "generate", "load", "model_files", "opfs", "request", "weight_shards"]
