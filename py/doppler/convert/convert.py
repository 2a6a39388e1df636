"""``doppler convert SRC OUT``: a GGUF file or HF folder to an RDRR directory."""

import re
from pathlib import Path

from doppler.convert.gguf_source import GgufSource
from doppler.convert.hf_source import HfSource
from doppler.convert.verify import verify_model
from doppler.convert.writer import ModelInfo, write_model
from doppler.format.errors import MissingFileError, SourceError
from doppler.format.plan import BLOCK_SIZE

QUANTS = ("q4_0", "q8_0")


def open_source(src: Path) -> GgufSource | HfSource:
    src = Path(src)
    if src.is_dir():
        return HfSource(src)
    if not src.exists():
        raise MissingFileError(f"{src}: no such file or folder")
    with src.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise SourceError(f"{src}: neither a GGUF file (magic {magic!r}) nor an HF folder")
    return GgufSource(src)


def tokenizer_spec(source: GgufSource | HfSource) -> dict | None:
    """The tokenizer spec dict (doppler.tokenizer.spec), or None for a folder without one."""
    if isinstance(source, GgufSource):
        if "tokenizer.ggml.model" not in source.fields:
            return None
        from doppler.tokenizer import spec

        return spec.from_gguf_metadata(source.fields)
    tokenizer_json, tokenizer_config = source.tokenizer_files()
    if tokenizer_json is None:
        return None
    from doppler.tokenizer import spec

    return spec.from_tokenizer_json(tokenizer_json, tokenizer_config)


def display_name(text: str) -> str:
    """Source-provided names lose path separators, '..' and control characters."""
    cleaned = re.sub(r"[/\\\x00-\x1f]+", "-", text).replace("..", ".")
    return cleaned[:256] or "model"


def convert(
    src: Path,
    out: Path,
    *,
    quant: str | None = None,
    mirrors: tuple[str, ...] = (),
    progress: bool = True,
    block_size: int = BLOCK_SIZE,
) -> Path:
    """Convert ``src`` into ``out`` (created atomically, verified before it appears);
    ``block_size``: bytes per block hash (see ``write_model``)."""
    source = open_source(src)
    kind = "gguf" if isinstance(source, GgufSource) else "hf"
    info = ModelInfo(
        name=display_name(source.name),
        source=display_name(f"{kind}:{Path(src).name}" + (f" quant={quant}" if quant else "")),
        config=source.config,
        tokenizer=tokenizer_spec(source),
        mirrors=mirrors,
    )
    return write_model(
        Path(out),
        info,
        source.tensors(quant),
        progress=progress,
        verify=verify_model,
        block_size=block_size,
    )
