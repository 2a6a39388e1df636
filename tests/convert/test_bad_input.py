"""Every bad input ends in a specific message and exit code 1, and leaves no output behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rdrr_helpers import SMOLLM2

from doppler.cli import main


def _fails(capsys: pytest.CaptureFixture, argv: list[str], message: str) -> None:
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err


def _no_output(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))


@pytest.mark.parametrize("keep", [2_000_000, 100_000, 10])
def test_truncated_gguf(tmp_path: Path, capsys, keep: int) -> None:
    src = tmp_path / "cut.gguf"
    with SMOLLM2.open("rb") as fh:
        src.write_bytes(fh.read(keep))
    _fails(capsys, ["convert", str(src), str(tmp_path / "out")], "truncated")
    _no_output(tmp_path / "out")


def test_corrupt_gguf_header(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (2**60).to_bytes(8, "little") * 2)
    _fails(capsys, ["convert", str(bad), str(tmp_path / "o")], "header claims")
    bad.write_bytes(b"NOPE" * 10)
    _fails(capsys, ["convert", str(bad), str(tmp_path / "o")], "neither a GGUF file")
    _fails(capsys, ["convert", str(tmp_path / "missing"), str(tmp_path / "o")], "no such file")


def _copy(tiny_hf, tmp_path: Path, model_type: str = "llama") -> Path:
    return Path(shutil.copytree(tiny_hf(model_type), tmp_path / "src"))


def test_truncated_safetensors(tiny_hf, tmp_path: Path, capsys) -> None:
    src = _copy(tiny_hf, tmp_path)
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    _fails(capsys, ["convert", str(src), str(tmp_path / "out")], "safetensors")
    _no_output(tmp_path / "out")


def test_unsupported_dtype(tiny_hf, tmp_path: Path, capsys) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    src = _copy(tiny_hf, tmp_path)
    tensors = load_file(src / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"].to(torch.float64)
    save_file(tensors, src / "model.safetensors")
    _fails(capsys, ["convert", str(src), str(tmp_path / "out")], "dtype F64")


def test_shape_mismatch_with_config(tiny_hf, tmp_path: Path, capsys) -> None:
    src = _copy(tiny_hf, tmp_path)
    config = json.loads((src / "config.json").read_text())
    config["intermediate_size"] = 128
    (src / "config.json").write_text(json.dumps(config))
    _fails(capsys, ["convert", str(src), str(tmp_path / "out")], "the config implies")


def test_unknown_architecture(tiny_hf, tmp_path: Path, capsys) -> None:
    src = _copy(tiny_hf, tmp_path)
    config = json.loads((src / "config.json").read_text())
    config["model_type"] = "gpt2"
    (src / "config.json").write_text(json.dumps(config))
    _fails(capsys, ["convert", str(src), str(tmp_path / "out")], "unknown architecture 'gpt2'")
    (src / "config.json").write_text("{not json")
    _fails(capsys, ["convert", str(src), str(tmp_path / "out")], "not valid JSON")


def test_existing_output_is_refused(tiny_hf, tmp_path: Path, capsys) -> None:
    (tmp_path / "out").mkdir()
    _fails(capsys, ["convert", str(tiny_hf("llama")), str(tmp_path / "out")], "already exists")


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    assert (
        main(["synth", "--like", "smollm2-135m", "--layers", "1", "--quiet", str(tmp_path / "m")])
        == 0
    )
    return tmp_path / "m"


def test_verify_and_inspect_reject_tampering(small_model: Path, capsys) -> None:
    assert main(["verify", str(small_model)]) == 0
    assert main(["inspect", str(small_model / "manifest.json")]) == 0
    assert "smollm2" in capsys.readouterr().out
    manifest = small_model / "manifest.json"
    doc = json.loads(manifest.read_bytes())
    index_name = doc["index"][0]["name"]
    index = small_model / f"{index_name}.bin"
    index.write_bytes(index.read_bytes().replace(b'"f32"', b'"f16"', 1))
    _fails(capsys, ["verify", str(small_model)], "bytes hash to")
    doc["index"][0]["name"] = "../" + index_name[3:]
    manifest.write_text(json.dumps(doc))
    _fails(capsys, ["verify", str(small_model)], "64 lowercase hex")
    _fails(capsys, ["inspect", str(manifest)], "64 lowercase hex")
    manifest.write_text("[]")
    _fails(capsys, ["inspect", str(manifest)], "expected an object")


def test_verify_reports_missing_shard(small_model: Path, capsys) -> None:
    biggest = max(small_model.glob("*.bin"), key=lambda p: p.stat().st_size)
    biggest.unlink()
    _fails(capsys, ["verify", str(small_model)], "missing")
