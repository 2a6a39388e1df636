"""Read a GGUF file (llama.cpp) as an architecture config plus lazily loaded tensors.

Tensor bytes are read with ``pread``, a row range at a time, at the offsets in the header
(parsed by gguf_header.py), so converting keeps only the piece in hand resident. Two
llama.cpp conventions are undone or recorded here (docs/rdrr.md "Conventions"):

* llama.cpp's converter permutes the rows of Llama-arch ``attn_q``/``attn_k`` (per head,
  rotate-half order -> interleaved pairs) because its ``llama`` graph uses interleaved
  rope. Rows are independent in every quantized type, so un-permuting the stored rows is
  exact; converted models are always rope style "neox" (HF order).
* llama.cpp adds 1 to Gemma 3 RMSNorm weights; the GGUF values are kept as they are and
  the config records ``norm.weight_offset = 0`` (HF Gemma checkpoints convert with 1).
"""

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from doppler.convert import pack
from doppler.convert.gguf_header import GgufTensorInfo, read_header
from doppler.convert.naming import gguf_name
from doppler.convert.writer import Loader, SourceTensor
from doppler.format.config import ArchConfig, Moe, Norm, Rope, RopeScaling
from doppler.format.errors import MissingFileError, SourceError, UnsupportedError
from doppler.format.layouts import LayoutError, layout_for_gguf

SUPPORTED_ARCHS = ("llama", "qwen2", "gemma3", "qwen2moe", "qwen3moe", "olmoe")
FLOAT_TYPES = ("F32", "F16", "BF16")
_MISSING = object()


@dataclass(frozen=True)
class _Raw:
    name: str  # canonical (expert template resolved)
    info: GgufTensorInfo  # shape, offset and nbytes of this (per-expert) slice


class GgufSource:
    """A GGUF model: ``config``, ``tensors(quant)``, ``fields`` (metadata), ``name``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(f"{self.path}: no such GGUF file")
        self.fields, table = read_header(self.path)
        self.arch = self.fields.get("general.architecture")
        if self.arch not in SUPPORTED_ARCHS:
            raise UnsupportedError(
                f"{self.path}: GGUF architecture {self.arch!r} is not "
                f"supported (supported: {', '.join(SUPPORTED_ARCHS)})"
            )
        self.name = str(self.fields.get("general.name") or self.path.stem)
        self._raws = [r for info in table for r in self._split(info)]
        shapes = {r.name: r.info.shape for r in self._raws}
        self.config = gguf_config(self.arch, self.fields, shapes)

    def _split(self, info: GgufTensorInfo) -> list[_Raw]:
        name, part = gguf_name(info.name)
        if part is None:
            return [_Raw(name, info)]
        if len(info.shape) != 3:
            raise SourceError(f"{self.path}: merged expert tensor {info.name} is not 3-D")
        per = info.nbytes // info.shape[0]
        return [
            _Raw(
                name.replace("{E}", str(e)),
                replace(info, shape=info.shape[1:], offset=info.offset + e * per, nbytes=per),
            )
            for e in range(info.shape[0])
        ]

    def tensors(self, quant: str | None = None) -> list[SourceTensor]:
        """Every tensor with its stored layout; ``quant`` re-quantizes float matrices."""
        out = []
        for raw in self._raws:
            gtype, shape = raw.info.type_name, raw.info.shape
            try:
                layout = layout_for_gguf(gtype).name
            except LayoutError:
                raise UnsupportedError(
                    f"{self.path}: tensor {raw.name} has GGUF type {gtype}, which has no layout"
                ) from None
            if quant and gtype in FLOAT_TYPES and quantizable(raw.name, shape, quant):
                layout = quant
            out.append(SourceTensor(raw.name, layout, shape, self._loader(raw, layout)))
        return out

    def _loader(self, raw: _Raw, layout: str) -> Loader:
        info = raw.info
        heads = {"attn.q.": self.config.num_heads, "attn.k.": self.config.num_kv_heads}
        permuted = next((n for key, n in heads.items() if key in raw.name), None)
        if self.arch != "llama":
            permuted = None
        rows = math.prod(info.shape[:-1])
        row_bytes = info.nbytes // rows
        requantize = layout != layout_for_gguf(info.type_name).name

        def load(lo: int, hi: int) -> tuple[str, np.ndarray]:
            if permuted is None:
                data = self._read(raw.name, info.offset + lo * row_bytes, (hi - lo) * row_bytes)
            else:  # q/k are small: un-permute whole heads, then take the rows asked for
                data = (
                    unpermute_rows(self._read(raw.name, info.offset, info.nbytes), rows, permuted)
                    .reshape(rows, -1)[lo:hi]
                    .reshape(-1)
                )
            shape = (hi - lo, info.shape[-1])
            if requantize:
                return pack.quantize(_floats(info.type_name, data, shape), layout)
            return pack.pack_gguf(info.type_name, data, shape)

        return load

    def _read(self, name: str, offset: int, size: int) -> np.ndarray:
        with self.path.open("rb") as fh:
            data = os.pread(fh.fileno(), size, offset)
        if len(data) != size:
            raise SourceError(f"{self.path}: tensor {name} is truncated")
        return np.frombuffer(data, dtype=np.uint8)


def quantizable(name: str, shape: tuple[int, ...], quant: str) -> bool:
    """Matrices whose rows split into 32-weight blocks, except routers (quantizing a router
    collapses its softmax; DOPPLER's first version learned this the hard way)."""
    return (
        len(shape) == 2
        and shape[-1] % 32 == 0
        and name.endswith(".weight")
        and ".router." not in name
        and not name.endswith("router.weight")
        and not name.endswith("shared.gate.weight")
        and quant in ("q4_0", "q8_0")
    )


def unpermute_rows(data: np.ndarray, rows: int, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Llama q/k permutation: per head, GGUF row 2i+s holds HF row
    s*(d/2)+i. Works on raw bytes of any type because rows are stored independently."""
    if rows % (2 * n_head):
        raise SourceError(f"cannot un-permute {rows} rows into {n_head} heads")
    by_row = data.reshape(rows, -1)
    d = rows // n_head
    return by_row.reshape(n_head, d // 2, 2, -1).swapaxes(1, 2).reshape(-1).copy()


def _floats(gguf_type: str, data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if gguf_type == "BF16":
        return pack.bf16_to_f32(data.view(np.uint16)).reshape(shape)
    return data.view(np.float32 if gguf_type == "F32" else np.float16).reshape(shape)


def _meta(fields: dict, key: str, kind: type, default: object = _MISSING):
    value = fields.get(key, default)
    if value is _MISSING:
        raise SourceError(f"GGUF metadata {key} is missing")
    if value is None or value is default:
        return value
    ok = (
        isinstance(value, int) and not isinstance(value, bool)
        if kind is int
        else (
            isinstance(value, int | float) and not isinstance(value, bool)
            if kind is float
            else isinstance(value, kind)
        )
    )
    if not ok:
        raise UnsupportedError(f"GGUF metadata {key} = {value!r} is not a {kind.__name__}")
    return kind(value)


def gguf_config(arch: str, fields: dict, shapes: dict[str, tuple[int, ...]]) -> ArchConfig:
    """ArchConfig from GGUF metadata (llama.cpp key names) and the tensor shapes."""

    def get(key: str, kind: type = int, default: object = _MISSING):
        return _meta(fields, f"{arch}.{key}", kind, default)

    if "embed.weight" not in shapes:
        raise SourceError("GGUF has no token_embd.weight")
    hidden = get("embedding_length")
    layers = get("block_count")
    heads = get("attention.head_count")
    kv_heads = get("attention.head_count_kv", int, heads)
    head_dim = get("attention.key_length", int, hidden // max(heads, 1))
    experts = get("expert_count", int, 0)
    gemma = arch == "gemma3"
    window = get("attention.sliding_window", int, None) if gemma else None
    family = {
        "llama": "mixtral" if experts else "llama",
        "qwen2moe": "qwen2_moe",
        "qwen3moe": "qwen3_moe",
    }.get(arch, arch)
    moe = None
    if experts:
        shared = get("expert_shared_feed_forward_length", int, 0)
        moe = Moe(
            num_experts=experts,
            top_k=get("expert_used_count"),
            expert_intermediate_size=get(
                "expert_feed_forward_length", int, get("feed_forward_length", int, 0)
            ),
            renormalize=bool(
                fields.get(f"{arch}.expert_weights_norm", arch in ("llama", "qwen3moe"))
            ),
            num_shared_experts=1 if shared else 0,
            shared_intermediate_size=shared,
            shared_expert_gate=bool(shared) and arch == "qwen2moe",
        )
    return ArchConfig(
        arch=family,
        vocab_size=shapes["embed.weight"][0],
        hidden_size=hidden,
        intermediate_size=get("feed_forward_length", int, 0)
        or (moe.expert_intermediate_size if moe else 0),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        max_position=get("context_length"),
        activation="gelu_tanh" if gemma else "silu",
        norm=Norm(
            eps=get("attention.layer_norm_rms_epsilon", float), weight_offset=0.0, post_norms=gemma
        ),
        rope=Rope(
            theta=get("rope.freq_base", float, 10000.0),
            dim=get("rope.dimension_count", int, head_dim),
            style="neox",
            local_theta=10000.0 if gemma else None,  # llama.cpp's fixed Gemma 3 SWA base
            scaling=_gguf_rope_scaling(get, "rope_freqs.weight" in shapes),
        ),
        layer_types=_gemma_layer_types(fields, layers) if gemma else ("full",) * layers,
        qkv_bias="layers.0.attn.q.bias" in shapes,
        o_bias="layers.0.attn.o.bias" in shapes,
        qk_norm={"gemma3": "head", "qwen3moe": "head", "olmoe": "full"}.get(arch, "none"),
        attn_scale=_gemma_attn_scale(layers, hidden, heads, head_dim) if gemma else None,
        final_softcap=get("final_logit_softcapping", float, None),
        attn_softcap=get("attn_logit_softcapping", float, None),
        sliding_window=window,
        tie_embeddings="lm_head.weight" not in shapes,
        embedding_scale=math.sqrt(hidden) if gemma else 1.0,
        moe=moe,
    )


def _gguf_rope_scaling(get: Callable, has_freqs: bool) -> RopeScaling | None:
    if has_freqs:
        return RopeScaling("freq_factors")
    kind = get("rope.scaling.type", str, "none")
    if kind == "none":
        return None
    factor = get("rope.scaling.factor", float)
    if kind == "linear":
        return RopeScaling("linear", factor=factor)
    if kind == "yarn":
        return RopeScaling(
            "yarn",
            factor=factor,
            original_max_position=get("rope.scaling.original_context_length"),
            beta_fast=get("rope.scaling.yarn_beta_fast", float, 32.0),
            beta_slow=get("rope.scaling.yarn_beta_slow", float, 1.0),
        )
    raise UnsupportedError(f"GGUF rope scaling type {kind!r} is not supported")


def _gemma_layer_types(fields: dict, layers: int) -> tuple[str, ...]:
    """Gemma 3: five sliding layers then one global, unless the GGUF says otherwise."""
    pattern = fields.get("gemma3.attention.sliding_window_pattern", 6)
    if isinstance(pattern, list):
        if len(pattern) != layers:
            raise SourceError("gemma3.attention.sliding_window_pattern has the wrong length")
        return tuple("sliding" if bool(p) else "full" for p in pattern)
    period = _meta(fields, "gemma3.attention.sliding_window_pattern", int, 6)
    return tuple("full" if (i + 1) % period == 0 else "sliding" for i in range(layers))


def _gemma_attn_scale(layers: int, hidden: int, heads: int, head_dim: int) -> float:
    """query_pre_attn_scalar is not in the GGUF; llama.cpp uses hidden/heads for the
    62-layer 27B model and head_dim otherwise, which matches the HF configs."""
    return 1.0 / math.sqrt(hidden // heads if layers == 62 else head_dim)
