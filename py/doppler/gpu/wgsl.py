"""A tiny WGSL preprocessor: ``#include``, and ``#if``/``#else``/``#endif`` on feature flags.

One shader file per op family carries its variants (subgroups or not, f16 or not) behind
flags; numeric choices (workgroup sizes) use WGSL ``override`` constants instead, so the
preprocessor stays this small. Pure Python so it is tested under CPython.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

_INCLUDE = re.compile(r'^\s*#include\s+"([A-Za-z0-9_\-]+\.wgsl)"\s*$')
_IF = re.compile(r"^\s*#if\s+(!?)([A-Z][A-Z0-9_]*)\s*$")
_ELSE = re.compile(r"^\s*#else\s*$")
_ENDIF = re.compile(r"^\s*#endif\s*$")


class WgslPreprocessError(ValueError):
    """A shader source has an unbalanced ``#if``, a bad directive, or a missing include."""


def preprocess(
    source: str,
    flags: Iterable[str],
    load_include: Callable[[str], str],
    name: str = "<shader>",
    _depth: int = 0,
) -> str:
    """Expand includes and keep only the branches selected by ``flags`` (upper-case names)."""
    if _depth > 8:
        raise WgslPreprocessError(f"{name}: includes nested too deeply (a cycle?)")
    active_flags = set(flags)
    out: list[str] = []
    stack: list[tuple[bool, bool]] = []  # (this branch taken, parent active)
    for number, line in enumerate(source.splitlines(), 1):
        active = all(taken for taken, _ in stack)
        if match := _IF.match(line):
            negate, flag = match.groups()
            stack.append(((flag in active_flags) != bool(negate), active))
        elif _ELSE.match(line):
            if not stack:
                raise WgslPreprocessError(f"{name}:{number}: #else without #if")
            taken, parent = stack.pop()
            stack.append((not taken, parent))
        elif _ENDIF.match(line):
            if not stack:
                raise WgslPreprocessError(f"{name}:{number}: #endif without #if")
            stack.pop()
        elif line.lstrip().startswith("#"):
            if active and (match := _INCLUDE.match(line)):
                included = load_include(match.group(1))
                out.append(
                    preprocess(included, active_flags, load_include, match.group(1), _depth + 1)
                )
            elif active:
                raise WgslPreprocessError(f"{name}:{number}: unknown directive {line.strip()!r}")
        elif active:
            out.append(line)
    if stack:
        raise WgslPreprocessError(f"{name}: {len(stack)} #if without #endif")
    return "\n".join(out)
