"""The WGSL preprocessor: flags select branches, includes expand, mistakes are reported."""

from __future__ import annotations

import pytest

from doppler.gpu.wgsl import WgslPreprocessError, preprocess

INCLUDES = {
    "common.wgsl": "fn helper() -> f32 { return 1.0; }",
    "loop.wgsl": '#include "loop.wgsl"',
}


def _pre(source, flags=()):
    return preprocess(source, flags, INCLUDES.__getitem__)


def test_if_else_selects_by_flag():
    source = "a\n#if HAS_SUBGROUPS\nb\n#else\nc\n#endif\nd"
    assert _pre(source, {"HAS_SUBGROUPS"}).split() == ["a", "b", "d"]
    assert _pre(source).split() == ["a", "c", "d"]


def test_negated_and_nested_conditions():
    source = "#if !F16\nx\n#if SG\ny\n#endif\n#endif\nz"
    assert _pre(source, {"SG"}).split() == ["x", "y", "z"]
    assert _pre(source, {"F16", "SG"}).split() == ["z"]


def test_include_expands_only_in_active_branches():
    source = '#if NEVER\n#include "missing.wgsl"\n#endif\n#include "common.wgsl"'
    assert "fn helper" in _pre(source)


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("#if A\nx", "without #endif"),
        ("#endif", "#endif without #if"),
        ("#else", "#else without #if"),
        ("#define X 1", "unknown directive"),
        ('#include "loop.wgsl"', "nested too deeply"),
    ],
)
def test_mistakes_are_reported(source, problem):
    with pytest.raises(WgslPreprocessError, match=problem):
        _pre(source)


def test_missing_include_raises():
    with pytest.raises(KeyError):
        _pre('#include "missing.wgsl"')
