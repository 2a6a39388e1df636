"""Architecture config: everything the runtime needs to run (or plan) a model.

One dataclass tree, serialised verbatim into the root manifest under ``config``. Every field
is always present in JSON (``null`` where absent) so a reader never guesses a default; the
converter fills defaults from the source model, once. Conventions that differ between source
formats are recorded explicitly here rather than hidden in the weights:

* ``rope.style``: how stored q/k weights pair rotary dimensions ("neox" = rotate-half,
  HF layout; "interleaved" = pairs (2i, 2i+1)). The converter un-permutes llama.cpp's
  interleaved Llama q/k so every converted model is "neox" unless the source itself is
  interleaved (DeepSeek-V3's MLA rope part).
* ``norm.weight_offset``: RMSNorm computes ``x * (offset + w)``. HF Gemma stores ``w`` and
  uses offset 1; llama.cpp's Gemma GGUFs already added the 1, so they convert with offset 0.
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field

from doppler.format.errors import SchemaError
from doppler.format.strict import limits, read_dataclass

ARCHS = ("llama", "qwen2", "gemma3", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3")
ACTIVATIONS = ("silu", "gelu_tanh", "gelu")
ROPE_STYLES = ("neox", "interleaved")
ROPE_SCALINGS = ("linear", "llama3", "yarn", "freq_factors")
QK_NORMS = ("none", "head", "full")
LAYER_TYPES = ("full", "sliding")
SCORINGS = ("softmax", "sigmoid")

_DIM = limits(1, 1 << 24)
_COUNT = limits(0, 1 << 16)
_POS = limits(1, 1 << 16)
_POSITIVE = limits(1e-12, 1e12)


@dataclass(frozen=True)
class RopeScaling:
    """Context-extension of rotary frequencies; unused parameters are null.

    ``linear``: positions divided by ``factor``. ``llama3``: Llama 3.1 band-wise scaling
    (factor, low/high_freq_factor, original_max_position). ``yarn``: YaRN (factor,
    original_max_position, beta_fast/slow, mscale, mscale_all_dim, attention_factor).
    ``freq_factors``: per-dimension divisors stored as tensor ``rope_freqs.weight`` (what
    llama.cpp GGUFs carry for Llama 3.x); no scalar parameters.
    """

    type: str = field(metadata=limits(choices=ROPE_SCALINGS))
    factor: float | None = field(default=None, metadata=_POSITIVE)
    original_max_position: int | None = field(default=None, metadata=limits(1, 1 << 30))
    low_freq_factor: float | None = field(default=None, metadata=_POSITIVE)
    high_freq_factor: float | None = field(default=None, metadata=_POSITIVE)
    beta_fast: float | None = field(default=None, metadata=_POSITIVE)
    beta_slow: float | None = field(default=None, metadata=_POSITIVE)
    mscale: float | None = field(default=None, metadata=limits(0.0, 1e6))
    mscale_all_dim: float | None = field(default=None, metadata=limits(0.0, 1e6))
    attention_factor: float | None = field(default=None, metadata=_POSITIVE)

    _REQUIRED = {  # noqa: RUF012 - class constant, not a field (no annotation)
        "linear": ("factor",),
        "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position"),
        "yarn": ("factor", "original_max_position", "beta_fast", "beta_slow"),
        "freq_factors": (),
    }

    def check(self, path: str) -> None:
        required = self._REQUIRED[self.type]
        for f in dataclasses.fields(self):
            if f.name == "type":
                continue
            present = getattr(self, f.name) is not None
            allowed = required + (
                ("mscale", "mscale_all_dim", "attention_factor") if self.type == "yarn" else ()
            )
            if f.name in required and not present:
                raise SchemaError(f"{path}.{f.name}: required for rope scaling {self.type!r}")
            if present and f.name not in allowed:
                raise SchemaError(f"{path}.{f.name}: not used by rope scaling {self.type!r}")


@dataclass(frozen=True)
class Rope:
    """Rotary embedding. ``local_theta`` is the base on sliding-window layers (Gemma 3),
    which also ignore ``scaling``; ``dim`` is the rotated width per head (partial rotary,
    MLA's qk_rope_head_dim)."""

    theta: float = field(metadata=_POSITIVE)
    dim: int = field(metadata=_DIM)
    style: str = field(metadata=limits(choices=ROPE_STYLES))
    local_theta: float | None = field(default=None, metadata=_POSITIVE)
    scaling: RopeScaling | None = None


@dataclass(frozen=True)
class Norm:
    """RMSNorm everywhere: ``y = x / sqrt(mean(x^2) + eps) * (weight_offset + w)``.
    ``post_norms``: Gemma's sandwich norms (post_attn_norm, post_ffn_norm) are present."""

    eps: float = field(metadata=limits(0.0, 1.0))
    weight_offset: float = field(default=0.0, metadata=limits(0.0, 1.0))
    post_norms: bool = False


@dataclass(frozen=True)
class Moe:
    """Routed experts. Scores = softmax or sigmoid of router logits; ``routing_bias``
    (DeepSeek-V3 ``router.score_bias``) is added for expert *selection* only. Group-limited
    top-k keeps the ``topk_group`` best of ``n_group`` groups (a group's score is the sum of
    its top-2 biased scores) before the top-k. ``renormalize`` divides the chosen weights by
    their sum; ``routed_scaling_factor`` multiplies them afterwards. Shared experts run on
    every token; ``shared_expert_gate`` (Qwen2-MoE) scales them by sigmoid(gate . x).
    Layer L uses experts iff ``is_moe_layer(L)``."""

    num_experts: int = field(metadata=limits(1, 1 << 16))
    top_k: int = field(metadata=limits(1, 1 << 16))
    expert_intermediate_size: int = field(metadata=_DIM)
    scoring: str = field(default="softmax", metadata=limits(choices=SCORINGS))
    renormalize: bool = True
    n_group: int = field(default=1, metadata=_POS)
    topk_group: int = field(default=1, metadata=_POS)
    routing_bias: bool = False
    routed_scaling_factor: float = field(default=1.0, metadata=_POSITIVE)
    num_shared_experts: int = field(default=0, metadata=_COUNT)
    shared_intermediate_size: int = field(default=0, metadata=limits(0, 1 << 24))
    shared_expert_gate: bool = False
    first_k_dense: int = field(default=0, metadata=limits(0, 1 << 16))
    sparse_step: int = field(default=1, metadata=_POS)
    dense_layers: tuple[int, ...] = field(default=(), metadata=limits(0, 1 << 16))

    def is_moe_layer(self, layer: int) -> bool:
        return (
            layer >= self.first_k_dense
            and (layer + 1) % self.sparse_step == 0
            and layer not in self.dense_layers
        )

    def check(self, path: str) -> None:
        if self.top_k > self.num_experts:
            raise SchemaError(f"{path}.top_k: {self.top_k} > num_experts {self.num_experts}")
        if self.num_experts % self.n_group or self.topk_group > self.n_group:
            raise SchemaError(f"{path}.n_group: groups must divide experts, topk_group <= n_group")
        if (self.num_shared_experts > 0) != (self.shared_intermediate_size > 0):
            raise SchemaError(f"{path}.shared_intermediate_size: must be > 0 iff shared experts")


@dataclass(frozen=True)
class Mla:
    """DeepSeek-V2/V3 multi-head latent attention. ``q_lora_rank`` null = plain q proj."""

    q_lora_rank: int | None = field(metadata=_DIM)
    kv_lora_rank: int = field(metadata=_DIM)
    qk_nope_head_dim: int = field(metadata=_DIM)
    qk_rope_head_dim: int = field(metadata=_DIM)
    v_head_dim: int = field(metadata=_DIM)


@dataclass(frozen=True)
class ArchConfig:
    """The model's architecture. ``attn_scale`` multiplies q.k (1/sqrt(head_dim) unless the
    model says otherwise, e.g. Gemma's query_pre_attn_scalar); ``embedding_scale`` multiplies
    looked-up embeddings (sqrt(hidden) for Gemma). ``layer_types[L]`` is "full" or "sliding"
    (window ``sliding_window``). MTP layers (DeepSeek-V3) are numbered after the main ones:
    ``num_layers .. num_layers + mtp_layers - 1``."""

    arch: str = field(metadata=limits(choices=ARCHS))
    vocab_size: int = field(metadata=_DIM)
    hidden_size: int = field(metadata=_DIM)
    intermediate_size: int = field(metadata=_DIM)
    num_layers: int = field(metadata=limits(1, 4096))
    num_heads: int = field(metadata=limits(1, 1 << 16))
    num_kv_heads: int = field(metadata=limits(1, 1 << 16))
    head_dim: int = field(metadata=_DIM)
    max_position: int = field(metadata=limits(1, 1 << 30))
    activation: str = field(metadata=limits(choices=ACTIVATIONS))
    norm: Norm
    rope: Rope
    layer_types: tuple[str, ...] = field(metadata=limits(choices=LAYER_TYPES))
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: str = field(default="none", metadata=limits(choices=QK_NORMS))
    attn_scale: float | None = field(default=None, metadata=_POSITIVE)
    attn_softcap: float | None = field(default=None, metadata=_POSITIVE)
    final_softcap: float | None = field(default=None, metadata=_POSITIVE)
    sliding_window: int | None = field(default=None, metadata=limits(1, 1 << 30))
    tie_embeddings: bool = False
    embedding_scale: float = field(default=1.0, metadata=_POSITIVE)
    moe: Moe | None = None
    mla: Mla | None = None
    mtp_layers: int = field(default=0, metadata=limits(0, 64))

    def __post_init__(self) -> None:
        if self.attn_scale is None:
            object.__setattr__(self, "attn_scale", 1.0 / math.sqrt(self.qk_head_dim))

    @property
    def total_layers(self) -> int:
        """Main layers plus MTP layers: every layer index that has tensors."""
        return self.num_layers + self.mtp_layers

    @property
    def qk_head_dim(self) -> int:
        mla = self.mla
        return mla.qk_nope_head_dim + mla.qk_rope_head_dim if mla else self.head_dim

    def is_moe_layer(self, layer: int) -> bool:
        return self.moe is not None and self.moe.is_moe_layer(layer)

    def check(self, path: str) -> None:
        if self.num_heads % self.num_kv_heads:
            raise SchemaError(f"{path}.num_kv_heads: must divide num_heads ({self.num_heads})")
        if len(self.layer_types) != self.num_layers:
            raise SchemaError(f"{path}.layer_types: needs {self.num_layers} entries")
        if "sliding" in self.layer_types and self.sliding_window is None:
            raise SchemaError(f"{path}.sliding_window: sliding layers need a window")
        if self.rope.dim % 2 or self.rope.dim > self.qk_head_dim:
            raise SchemaError(f"{path}.rope.dim: must be even and <= the q/k head dim")

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def validated(self) -> "ArchConfig":
        """This config after the same checks a reader applies (for configs built in code)."""
        return ArchConfig.from_json(self.to_json())

    @classmethod
    def from_json(cls, value: object, path: str = "config") -> "ArchConfig":
        return read_dataclass(cls, value, path)
