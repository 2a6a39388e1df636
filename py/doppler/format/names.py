"""Name rules: content-addressed shard names and canonical tensor names.

Shard names become URLs and file names on clients, so they are exactly 64 lowercase hex
digits. Tensor names are dot-separated lowercase segments (``layers.3.attn.q.weight``), so no
name can carry a path separator or ``..``. See docs/rdrr.md for the naming scheme.
"""

import re

from doppler.format.errors import InvalidNameError

_HEX64 = re.compile(r"[0-9a-f]{64}")
_TENSOR = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_LAYER = re.compile(r"layers\.(0|[1-9][0-9]{0,4})\.")
_EXPERT = re.compile(r"layers\.(0|[1-9][0-9]{0,4})\.experts\.(0|[1-9][0-9]{0,5})\.")
_URL = re.compile(r"https?://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%\-]+)*/")
_FORBIDDEN = ("/", "\\", "..", "\x00")
MAX_TENSOR_NAME = 200


def check_shard_name(name: object, where: str) -> str:
    """A shard is named by the lowercase hex SHA-256 of its bytes: 64 chars, nothing else."""
    if type(name) is not str or not _HEX64.fullmatch(name):
        raise InvalidNameError(f"{where}: shard name {_show(name)} is not 64 lowercase hex digits")
    return name


def check_tensor_name(name: object, where: str) -> str:
    if type(name) is not str or len(name) > MAX_TENSOR_NAME or not _TENSOR.fullmatch(name):
        raise InvalidNameError(
            f"{where}: tensor name {_show(name)} must be dot-separated [a-z0-9_] segments"
        )
    return name


def check_display_name(name: object, where: str, max_len: int = 256) -> str:
    """Free-text names (model name, source) may be shown or used as folder names."""
    if type(name) is not str or len(name) > max_len:
        raise InvalidNameError(f"{where}: expected a string of at most {max_len} characters")
    if any(bad in name for bad in _FORBIDDEN) or any(ord(c) < 32 for c in name):
        raise InvalidNameError(f"{where}: {name!r} contains a path separator, '..' or control")
    return name


def check_mirror_url(url: object, where: str) -> str:
    """Mirror base URLs: http(s), ending in '/', no '..' segment; shards are base + name."""
    if type(url) is not str or len(url) > 512 or not _URL.fullmatch(url) or "/../" in url:
        raise InvalidNameError(f"{where}: {_show(url)} is not an http(s) base URL ending in '/'")
    return url


def layer_of(name: str) -> int | None:
    """Layer index of a canonical tensor name, or None for global tensors."""
    match = _LAYER.match(name)
    return int(match.group(1)) if match else None


def expert_of(name: str) -> tuple[int, int] | None:
    """(layer, expert) of a routed-expert tensor name, or None."""
    match = _EXPERT.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
