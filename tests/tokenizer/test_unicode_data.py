"""The committed Unicode category table equals what ``unicodedata`` says.

Run this file as a script to regenerate ``doppler/tokenizer/unicode_data.py``.
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

import pytest

from doppler.tokenizer import unicode_data

TARGET = Path(__file__).resolve().parents[2] / "py" / "doppler" / "tokenizer" / "unicode_data.py"


def category_runs() -> list[tuple[int, str]]:
    """(first code point, general category) at every change of category."""
    runs: list[tuple[int, str]] = []
    for cp in range(0x110000):
        cat = unicodedata.category(chr(cp))
        if not runs or runs[-1][1] != cat:
            runs.append((cp, cat))
    return runs


def render_module() -> str:
    runs = category_runs()
    starts = ",".join(f"{cp:x}" for cp, _ in runs)
    cats = "".join(cat for _, cat in runs)
    chunk = 88
    starts_lines = "\n".join(f'    "{starts[i : i + chunk]}"' for i in range(0, len(starts), chunk))
    cats_lines = "\n".join(f'    "{cats[i : i + chunk]}"' for i in range(0, len(cats), chunk))
    return f'''"""Unicode general categories as runs (from tests/tokenizer/test_unicode_data.py).

Python's ``re`` has no ``\\\\p{{L}}``; pre-tokenizer regexes get character classes built from this
table, which is far cheaper to import in Pyodide than scanning ``unicodedata`` at start-up.
"""

UNICODE_VERSION = "{unicodedata.unidata_version}"

# Hex code points where the general category changes, comma separated.
RUN_STARTS = (
{starts_lines}
)

# Two-letter general category of each run, concatenated.
RUN_CATEGORIES = (
{cats_lines}
)
'''


def test_table_matches_unicodedata() -> None:
    if unicodedata.unidata_version != unicode_data.UNICODE_VERSION:
        pytest.skip(f"table is Unicode {unicode_data.UNICODE_VERSION}, this Python has another")
    assert TARGET.read_text() == render_module()


if __name__ == "__main__":
    TARGET.write_text(render_module())
    sys.exit(0)
