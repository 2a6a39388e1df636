"""Read a Hugging Face model folder: ``config.json`` + ``*.safetensors`` (sharded or not).

Tensors are opened lazily with safetensors' ``safe_open`` (torch framework, because numpy
has no bfloat16) and keep their dtype: f32/f16/bf16 are stored as is, or quantized on
request. ``config_from_hf`` is also what ``synth --like config.json`` uses.
"""

import json
import math
from pathlib import Path

import numpy as np

from doppler.convert import pack
from doppler.convert.gguf_source import quantizable
from doppler.convert.naming import hf_name
from doppler.convert.writer import Loader, SourceTensor
from doppler.format.config import ArchConfig, Mla, Moe, Norm, Rope, RopeScaling
from doppler.format.errors import MissingFileError, SourceError, UnsupportedError

ARCH_BY_MODEL_TYPE = {
    "llama": "llama",
    "qwen2": "qwen2",
    "gemma3_text": "gemma3",
    "mixtral": "mixtral",
    "qwen2_moe": "qwen2_moe",
    "qwen3_moe": "qwen3_moe",
    "olmoe": "olmoe",
    "deepseek_v3": "deepseek_v3",
}
DTYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16"}
ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


class HfSource:
    """An HF model folder: ``config``, ``tensors(quant)``, ``tokenizer_files``, ``name``."""

    def __init__(self, folder: Path) -> None:
        from safetensors import SafetensorError, safe_open

        self.folder = Path(folder)
        self.raw_config = read_json(self.folder / "config.json")
        files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise MissingFileError(f"{self.folder}: no *.safetensors files")
        self._open = safe_open
        self._where: dict[str, tuple[Path, str, str, tuple[int, ...]]] = {}
        arch = model_arch(self.raw_config)
        for path in files:
            try:
                with safe_open(str(path), framework="pt") as fh:
                    for key in fh.keys():  # noqa: SIM118 - safe_open handles are not dicts
                        info = fh.get_slice(key)
                        name = hf_name(key, arch)
                        if name is None:
                            continue
                        if name in self._where:
                            raise SourceError(f"{path.name}: tensor {key} appears twice")
                        self._where[name] = (
                            path,
                            key,
                            info.get_dtype(),
                            tuple(int(d) for d in info.get_shape()),
                        )
            except (SafetensorError, OSError) as exc:
                raise SourceError(f"{path}: not a readable safetensors file ({exc})") from None
        self.config = config_from_hf(self.raw_config, "lm_head.weight" in self._where)
        if self.config.tie_embeddings:
            self._where.pop("lm_head.weight", None)
        self.name = str(self.raw_config.get("_name_or_path") or self.folder.name)

    def tensors(self, quant: str | None = None) -> list[SourceTensor]:
        out = []
        for name, (path, key, dtype, shape) in self._where.items():
            if dtype not in DTYPES:
                raise UnsupportedError(
                    f"{path.name}: tensor {key} has dtype {dtype}; supported: {', '.join(DTYPES)}"
                )
            layout = quant if quant and quantizable(name, shape, quant) else DTYPES[dtype]
            loader = self._loader(path, key, dtype, shape, layout)
            out.append(SourceTensor(name, layout, shape, loader))
        return out

    def _loader(
        self, path: Path, key: str, dtype: str, shape: tuple[int, ...], layout: str
    ) -> Loader:
        if len(shape) > 2:
            raise UnsupportedError(f"{path.name}: tensor {key} has rank {len(shape)}")

        def load(lo: int, hi: int) -> tuple[str, np.ndarray]:
            try:
                with self._open(str(path), framework="pt") as fh:
                    tensor = fh.get_tensor(key) if len(shape) == 1 else fh.get_slice(key)[lo:hi]
            except Exception as exc:  # safetensors/torch raise assorted errors on bad bytes
                raise SourceError(f"{path.name}: cannot read tensor {key} ({exc})") from None
            if layout == DTYPES[dtype]:
                return pack.pack_float(tensor, layout)
            if dtype == "BF16":
                import torch

                values = pack.bf16_to_f32(tensor.view(torch.int16).numpy())
            else:
                values = tensor.numpy()
            return pack.quantize(values, layout)

        return load

    def tokenizer_files(self) -> tuple[dict | None, dict | None]:
        """(tokenizer.json, tokenizer_config.json) contents, each None when absent."""
        files = [self.folder / "tokenizer.json", self.folder / "tokenizer_config.json"]
        tok, cfg = (read_json(p) if p.is_file() else None for p in files)
        return tok, cfg


def read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SourceError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise SourceError(f"{path}: expected a JSON object")
    return value


def model_arch(cfg: dict) -> str:
    model_type = cfg.get("model_type")
    if model_type not in ARCH_BY_MODEL_TYPE:
        raise UnsupportedError(
            f"unknown architecture {model_type!r} (model_type in "
            f"config.json); supported: {', '.join(ARCH_BY_MODEL_TYPE)}"
        )
    return ARCH_BY_MODEL_TYPE[model_type]


class _Cfg:
    """Typed access to config.json values, so a wrong type is a SourceError, not a crash."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg

    def get(self, key: str, kind: type, default: object = ...) -> object:
        value = self.cfg.get(key, default)
        if value is ...:
            raise SourceError(f"config.json: missing {key}")
        if value is None or value is default:
            return value
        good = (
            isinstance(value, int) and not isinstance(value, bool)
            if kind is int
            else isinstance(value, int | float) and not isinstance(value, bool)
            if kind is float
            else isinstance(value, kind)
        )
        if not good:
            raise SourceError(f"config.json: {key} = {value!r} is not a {kind.__name__}")
        return kind(value)

    def experts(self) -> int:
        """Routed expert count; transformers 5 renamed ``num_experts`` to
        ``num_local_experts`` for some MoE configs, hub files still use the old key."""
        key = "num_experts" if "num_experts" in self.cfg else "num_local_experts"
        return self.get(key, int)


def config_from_hf(raw: dict, has_lm_head: bool = True) -> ArchConfig:
    """ArchConfig from an HF config.json dict (transformers 4.x and 5.x key styles)."""
    arch = model_arch(raw)
    c = _Cfg(raw)
    hidden = c.get("hidden_size", int)
    heads = c.get("num_attention_heads", int)
    head_dim = c.get("head_dim", int, None) or hidden // heads
    layers = c.get("num_hidden_layers", int)
    gemma = arch == "gemma3"
    mla = _mla(c) if arch == "deepseek_v3" else None
    rope_dim = (
        mla.qk_rope_head_dim if mla else int(head_dim * c.get("partial_rotary_factor", float, 1.0))
    )
    global_rope, local_theta = _rope_params(raw, gemma)
    scaling = _rope_scaling(global_rope)
    attn_scale = None
    if gemma:
        attn_scale = c.get("query_pre_attn_scalar", float, float(head_dim)) ** -0.5
    elif mla:
        attn_scale = _mla_scale(mla, scaling)
    act = c.get("hidden_activation" if gemma else "hidden_act", str, "silu")
    if act not in ACTIVATIONS:
        raise UnsupportedError(f"config.json: activation {act!r} is not supported")
    window = c.get("sliding_window", int, None) if gemma else None
    return ArchConfig(
        arch=arch,
        vocab_size=c.get("vocab_size", int),
        hidden_size=hidden,
        intermediate_size=c.get("intermediate_size", int),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=c.get("num_key_value_heads", int, heads) or heads,
        head_dim=mla.qk_nope_head_dim + mla.qk_rope_head_dim if mla else head_dim,
        max_position=c.get("max_position_embeddings", int, 4096),
        activation=ACTIVATIONS[act],
        norm=Norm(
            eps=c.get("rms_norm_eps", float, 1e-6),
            weight_offset=1.0 if gemma else 0.0,
            post_norms=gemma,
        ),
        rope=Rope(
            theta=float(global_rope.get("rope_theta", 10000.0)),
            dim=rope_dim,
            style="interleaved" if mla and raw.get("rope_interleave", True) else "neox",
            local_theta=local_theta,
            scaling=scaling,
        ),
        layer_types=_layer_types(raw, layers) if gemma else ("full",) * layers,
        qkv_bias=_qkv_bias(arch, c),
        o_bias=arch == "llama" and bool(c.get("attention_bias", bool, False)),
        qk_norm={"gemma3": "head", "qwen3_moe": "head", "olmoe": "full"}.get(arch, "none"),
        attn_scale=attn_scale,
        attn_softcap=c.get("attn_logit_softcapping", float, None),
        final_softcap=c.get("final_logit_softcapping", float, None),
        sliding_window=window,
        tie_embeddings=bool(c.get("tie_word_embeddings", bool, not has_lm_head)),
        embedding_scale=math.sqrt(hidden) if gemma else 1.0,
        moe=_moe(arch, c),
        mla=mla,
        mtp_layers=c.get("num_nextn_predict_layers", int, 0) if mla else 0,
    )


def _qkv_bias(arch: str, c: _Cfg) -> bool:
    if arch == "qwen2":
        return True  # Qwen2 attention always has q/k/v biases
    if arch == "qwen2_moe":
        return bool(c.get("qkv_bias", bool, True))
    if arch in ("llama", "olmoe"):
        return bool(c.get("attention_bias", bool, False))
    return False


def _rope_params(raw: dict, gemma: bool) -> tuple[dict, float | None]:
    """(global rope dict with rope_theta and scaling keys, local theta for sliding layers)."""
    params = raw.get("rope_parameters")
    if isinstance(params, dict) and gemma and "full_attention" in params:
        local = params.get("sliding_attention") or {}
        return dict(params["full_attention"]), float(local.get("rope_theta", 10000.0))
    if isinstance(params, dict):
        return dict(params), None
    merged = dict(raw.get("rope_scaling") or {})
    merged["rope_theta"] = raw.get("rope_theta", 10000.0)
    local = float(raw.get("rope_local_base_freq", 10000.0)) if gemma else None
    return merged, local


def _rope_scaling(rope: dict) -> RopeScaling | None:
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default" or kind is None:
        return None
    try:
        if kind == "linear":
            return RopeScaling("linear", factor=float(rope["factor"]))
        if kind == "llama3":
            return RopeScaling(
                "llama3",
                factor=float(rope["factor"]),
                low_freq_factor=float(rope["low_freq_factor"]),
                high_freq_factor=float(rope["high_freq_factor"]),
                original_max_position=int(rope["original_max_position_embeddings"]),
            )
        if kind == "yarn":
            opt = {
                k: float(rope[k])
                for k in ("mscale", "mscale_all_dim", "attention_factor")
                if rope.get(k) is not None
            }
            return RopeScaling(
                "yarn",
                factor=float(rope["factor"]),
                original_max_position=int(rope["original_max_position_embeddings"]),
                beta_fast=float(rope.get("beta_fast", 32.0)),
                beta_slow=float(rope.get("beta_slow", 1.0)),
                **opt,
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"config.json: rope scaling {kind!r} lacks or mistypes {exc}") from None
    raise UnsupportedError(f"config.json: rope scaling {kind!r} is not supported")


def _layer_types(raw: dict, layers: int) -> tuple[str, ...]:
    types = raw.get("layer_types")
    if isinstance(types, list) and len(types) == layers:
        return tuple("sliding" if t == "sliding_attention" else "full" for t in types)
    period = raw.get("sliding_window_pattern", raw.get("_sliding_window_pattern", 6))
    return tuple("full" if (i + 1) % int(period) == 0 else "sliding" for i in range(layers))


def _moe(arch: str, c: _Cfg) -> Moe | None:
    if arch == "mixtral":
        return Moe(
            num_experts=c.experts(),
            top_k=c.get("num_experts_per_tok", int),
            expert_intermediate_size=c.get("intermediate_size", int),
        )
    if arch == "olmoe":
        return Moe(
            num_experts=c.experts(),
            top_k=c.get("num_experts_per_tok", int),
            expert_intermediate_size=c.get("intermediate_size", int),
            renormalize=bool(c.get("norm_topk_prob", bool, False)),
        )
    if arch in ("qwen2_moe", "qwen3_moe"):
        shared = c.get("shared_expert_intermediate_size", int, 0) if arch == "qwen2_moe" else 0
        return Moe(
            num_experts=c.experts(),
            top_k=c.get("num_experts_per_tok", int),
            expert_intermediate_size=c.get("moe_intermediate_size", int),
            renormalize=bool(c.get("norm_topk_prob", bool, False)),
            num_shared_experts=1 if shared else 0,
            shared_intermediate_size=shared,
            shared_expert_gate=bool(shared),
            sparse_step=c.get("decoder_sparse_step", int, 1),
            dense_layers=tuple(c.get("mlp_only_layers", list, [])),
        )
    if arch == "deepseek_v3":
        if c.get("moe_layer_freq", int, 1) != 1:
            raise UnsupportedError("config.json: moe_layer_freq other than 1 is not supported")
        shared = c.get("n_shared_experts", int, 0)
        inner = c.get("moe_intermediate_size", int)
        return Moe(
            num_experts=c.get("n_routed_experts", int),
            top_k=c.get("num_experts_per_tok", int),
            expert_intermediate_size=inner,
            scoring=c.get("scoring_func", str, "sigmoid"),
            renormalize=bool(c.get("norm_topk_prob", bool, True)),
            n_group=c.get("n_group", int, 1),
            topk_group=c.get("topk_group", int, 1),
            routing_bias=c.get("topk_method", str, "noaux_tc") == "noaux_tc",
            routed_scaling_factor=c.get("routed_scaling_factor", float, 1.0),
            num_shared_experts=shared,
            shared_intermediate_size=inner * shared,
            first_k_dense=c.get("first_k_dense_replace", int, 0),
        )
    return None


def _mla(c: _Cfg) -> Mla:
    return Mla(
        q_lora_rank=c.get("q_lora_rank", int, None),
        kv_lora_rank=c.get("kv_lora_rank", int),
        qk_nope_head_dim=c.get("qk_nope_head_dim", int),
        qk_rope_head_dim=c.get("qk_rope_head_dim", int),
        v_head_dim=c.get("v_head_dim", int),
    )


def _mla_scale(mla: Mla, scaling: RopeScaling | None) -> float:
    """DeepSeek: 1/sqrt(qk head dim), times mscale^2 under YaRN (mscale_all_dim)."""
    scale = (mla.qk_nope_head_dim + mla.qk_rope_head_dim) ** -0.5
    if scaling is not None and scaling.type == "yarn" and scaling.mscale_all_dim:
        m = 0.1 * scaling.mscale_all_dim * math.log(scaling.factor or 1.0) + 1.0
        scale *= m * m
    return scale
