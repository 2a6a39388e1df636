"""Embedding gather on the GPU against numpy, for float and quantized tables.

The reference is ``doppler.convert.pack.dequantize`` of the same packed table, rows picked
by numpy indexing; ids come from a u32 buffer at an offset, as the decode loop feeds them.
"""

from __future__ import annotations

import numpy as np
import pytest

from doppler.convert.pack import dequantize
from gpu.packing import flag, random_packed, words
from harness.kernels import params, read, shader_source, write

pytestmark = pytest.mark.browser

RNG = np.random.default_rng(11)


def run_embed(
    kernels, layout, table, shape, ids, n_tokens, scale=1.0, id_offset=0, part=None, source=None
):
    """``part`` = (row0, rows) when ``table`` holds only those rows of the (vocab, hidden) table."""
    vocab, hidden = shape
    row0, rows = part or (0, vocab)
    row_words, plane1, plane2 = words(layout, hidden)
    chunks = -(-hidden // {"f32": 4, "f16": 8, "bf16": 8}.get(layout, 32))
    values = (n_tokens, hidden, vocab, scale, row_words, plane1, plane2, id_offset, row0, rows)
    (out,) = kernels.run(
        "embed",
        [
            read(0, table),
            read(1, np.asarray(ids, np.uint32)),
            write(2, n_tokens * hidden),
            params(3, "IIIfIIIIII", *values),
        ],
        (-(-chunks // 64), n_tokens),
        flags=(flag(layout),),
        source=source,
    )
    return out.reshape(n_tokens, hidden)


def embed_ref(layout, table, shape, ids, scale):
    values = dequantize(layout, table, shape).astype(np.float64)
    rows = [values[i] if i < shape[0] else np.zeros(shape[1]) for i in ids]
    return (np.stack(rows) * np.float32(scale)).astype(np.float32)


@pytest.mark.parametrize(
    ("layout", "vocab", "hidden", "scale"),
    [
        ("f32", 37, 13, 1.0),
        ("f32", 5, 1, 3.5),
        ("f16", 50, 20, float(np.sqrt(20))),
        ("f16", 300, 576, 1.0),
        ("bf16", 9, 31, 1.0),
        ("q8_0", 40, 96, float(np.sqrt(96))),
        ("q4_1", 17, 64, 1.0),
        ("q6_k", 6, 512, 2.0),
        ("q4_k", 5, 256, 1.0),
    ],
)
def test_embed_matches_numpy(kernels, layout, vocab, hidden, scale):
    table = random_packed(RNG, layout, (vocab, hidden))
    ids = [0, vocab - 1, 3 % vocab, 3 % vocab, vocab // 2, 1 % vocab, vocab + 7]
    got = run_embed(kernels, layout, table, (vocab, hidden), ids, len(ids), scale)
    want = embed_ref(layout, table, (vocab, hidden), ids, scale)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    assert not got[-1].any(), "an out-of-range id must give a zero row"


def test_embed_reads_ids_at_an_offset(kernels):
    """Decode reads one id from the sampler's buffer: n_tokens=1 at id_offset."""
    table = random_packed(RNG, "f16", (30, 40))
    ids = [4, 9, 21, 2]
    got = run_embed(kernels, "f16", table, (30, 40), ids, 1, id_offset=2)
    np.testing.assert_array_equal(got, embed_ref("f16", table, (30, 40), [21], 1.0))


def check_split_gather(kernels, source=None):
    """Each part writes the tokens whose ids it holds; the last part also the zero rows."""
    vocab, hidden, split = 70, 96, 41
    table = random_packed(RNG, "q8_0", (vocab, hidden))
    row_bytes = table.size // vocab
    ids = [0, 40, 41, 69, 3, 55, 70, 1000]
    want = embed_ref("q8_0", table, (vocab, hidden), ids, 2.0)
    merged = np.full(want.shape, np.nan, np.float32)
    for row0, rows in ((0, split), (split, vocab - split)):
        part = table[row0 * row_bytes : (row0 + rows) * row_bytes]
        got = run_embed(
            kernels,
            "q8_0",
            part,
            (vocab, hidden),
            ids,
            len(ids),
            2.0,
            part=(row0, rows),
            source=source,
        )
        last = row0 + rows == vocab
        mine = np.array([row0 <= i < row0 + rows or (i >= vocab and last) for i in ids])
        assert np.isnan(got[~mine]).all(), "a part wrote a token it does not hold"
        merged[mine] = got[mine]
    np.testing.assert_allclose(merged, want, rtol=1e-6, atol=0)


def test_embed_split_table_in_two_parts(kernels):
    check_split_gather(kernels)


SPLIT_BUGS = {
    "every part writes zero rows": ("params.row0 + params.rows == params.vocab", "true"),
    "part range off by one": ("id - params.row0 >= params.rows", "id - params.row0 > params.rows"),
    "row0 not subtracted": ("let row = id - params.row0;", "let row = id;"),
}


@pytest.mark.parametrize("bug", sorted(SPLIT_BUGS))
def test_split_planted_bugs_fail(kernels, bug):
    good, bad = SPLIT_BUGS[bug]
    source = shader_source("embed.wgsl")
    assert good in source, "the planted bug no longer applies: update the control"
    with pytest.raises(AssertionError):
        check_split_gather(kernels, source.replace(good, bad))


PLANTED_BUGS = {
    "wrong row stride": ("row * params.row_words", "row * (params.row_words + 1u)"),
    "scale ignored": ("values[e] * params.scale", "values[e]"),
    "last partial chunk dropped": ("min(CHUNK, params.hidden - first)", "CHUNK - 1u"),
}


@pytest.mark.parametrize("bug", sorted(PLANTED_BUGS))
def test_planted_bugs_fail_the_comparison(kernels, bug):
    good, bad = PLANTED_BUGS[bug]
    source = shader_source("embed.wgsl")
    assert good in source, "the planted bug no longer applies: update the control"
    table = random_packed(RNG, "f16", (50, 20))
    ids = [0, 7, 49, 3]
    got = run_embed(kernels, "f16", table, (50, 20), ids, 4, 2.0, source=source.replace(good, bad))
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(got, embed_ref("f16", table, (50, 20), ids, 2.0), rtol=1e-6)
