"""``block_size``: the index's block hashes follow the chosen size; bad sizes are refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from doppler.cli import main
from doppler.convert.convert import convert
from doppler.convert.synth import synth
from doppler.convert.verify import load_model
from doppler.format.errors import FormatError


def _check_blocks(model: Path, block_size: int) -> int:
    """Every shard's block hashes are SHA-256 of its ``block_size`` blocks; returns blocks."""
    _, manifest, indexes = load_model(model)
    assert manifest.block_size == block_size
    checked = 0
    for index in indexes.values():
        assert index.block_size == block_size
        for info in index.shards.values():
            data = (model / f"{info.name}.bin").read_bytes()
            want = [
                hashlib.sha256(data[i : i + block_size]).hexdigest()
                for i in range(0, len(data), block_size)
            ]
            assert info.blocks == "".join(want)
            checked += len(want)
    return checked


def test_convert_with_4k_blocks(tiny_hf, tmp_path: Path) -> None:
    out = convert(tiny_hf("llama"), tmp_path / "m", progress=False, block_size=4096)
    assert _check_blocks(out, 4096) > 2  # a true multi-block shard at this size


def test_default_block_size_is_1mib(tiny_hf, tmp_path: Path) -> None:
    out = convert(tiny_hf("llama"), tmp_path / "m", progress=False)
    _check_blocks(out, 1 << 20)


def test_cli_block_size(tiny_hf, tmp_path: Path, capsys) -> None:
    assert (
        main(
            ["convert", str(tiny_hf("llama")), str(tmp_path / "m"), "--quiet", "--block-size", "8K"]
        )
        == 0
    )
    _check_blocks(tmp_path / "m", 8192)


def test_synth_block_size(tmp_path: Path) -> None:
    out = synth(
        "smollm2-135m", tmp_path / "s", plan_only=True, layers=1, progress=False, block_size=65536
    )
    _, manifest, indexes = load_model(out)
    assert manifest.block_size == 65536
    assert all(index.block_size == 65536 for index in indexes.values())


@pytest.mark.parametrize("bad", [0, 1000, 2048, 4095, 12288, 128 << 20, True, 4096.0])
def test_bad_block_size_is_refused(tiny_hf, tmp_path: Path, bad) -> None:
    with pytest.raises(FormatError, match="power of two from 4096"):
        convert(tiny_hf("llama"), tmp_path / "m", progress=False, block_size=bad)
    assert not (tmp_path / "m").exists()


def test_cli_bad_block_size(tiny_hf, tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    assert (
        main(["convert", str(tiny_hf("llama")), str(tmp_path / "m"), "--block-size", "3000"]) == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: block size 3000 is invalid") and "power of two" in err
    with pytest.raises(SystemExit) as exit_:
        main(["convert", str(tiny_hf("llama")), str(tmp_path / "m"), "--block-size", "lots"])
    assert exit_.value.code == 2
    assert "not a size" in capsys.readouterr().err
