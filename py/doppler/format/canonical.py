"""The canonical tensor set of a model, derived from its architecture config alone.

Converter, synthesiser, verifier and runtime all agree on names and logical shapes through
this one function. Shapes are row-major with the last dimension the row (HF convention:
``(out_features, in_features)`` for projections). The order returned is the packing order:
global tensors, then per layer the dense tensors followed by each expert's tensors.
"""

from doppler.format.config import ArchConfig

Shape = tuple[int, ...]


def expected_tensors(cfg: ArchConfig) -> dict[str, Shape]:
    """Every tensor name the model must have, mapped to its logical shape."""
    out = global_tensors(cfg)
    for layer in range(cfg.total_layers):
        out.update(layer_tensors(cfg, layer))
    return out


def global_tensors(cfg: ArchConfig) -> dict[str, Shape]:
    """Tensors outside any layer: embeddings, final norm, head, rope frequency factors."""
    h = cfg.hidden_size
    out: dict[str, Shape] = {"embed.weight": (cfg.vocab_size, h), "output_norm.weight": (h,)}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = (cfg.vocab_size, h)
    scaling = cfg.rope.scaling
    if scaling is not None and scaling.type == "freq_factors":
        out["rope_freqs.weight"] = (cfg.rope.dim // 2,)
    return out


def layer_tensors(cfg: ArchConfig, layer: int) -> dict[str, Shape]:
    h = cfg.hidden_size
    p = f"layers.{layer}."
    out: dict[str, Shape] = {p + "attn_norm.weight": (h,)}
    out.update(_mla(cfg, p) if cfg.mla else _attention(cfg, p))
    if cfg.norm.post_norms:
        out[p + "post_attn_norm.weight"] = (h,)
    out[p + "ffn_norm.weight"] = (h,)
    if cfg.norm.post_norms:
        out[p + "post_ffn_norm.weight"] = (h,)
    if layer >= cfg.num_layers:
        out.update(
            {
                p + "mtp.enorm.weight": (h,),
                p + "mtp.hnorm.weight": (h,),
                p + "mtp.eh_proj.weight": (h, 2 * h),
                p + "mtp.head_norm.weight": (h,),
            }
        )
    moe = cfg.moe
    if moe is None or not moe.is_moe_layer(layer):
        out.update(_ffn(p + "ffn.", h, cfg.intermediate_size))
        return out
    out[p + "router.weight"] = (moe.num_experts, h)
    if moe.routing_bias:
        out[p + "router.score_bias"] = (moe.num_experts,)
    if moe.num_shared_experts:
        out.update(_ffn(p + "shared.ffn.", h, moe.shared_intermediate_size))
        if moe.shared_expert_gate:
            out[p + "shared.gate.weight"] = (1, h)
    for expert in range(moe.num_experts):
        out.update(_ffn(f"{p}experts.{expert}.ffn.", h, moe.expert_intermediate_size))
    return out


def _attention(cfg: ArchConfig, p: str) -> dict[str, Shape]:
    h, d = cfg.hidden_size, cfg.head_dim
    q, kv = cfg.num_heads * d, cfg.num_kv_heads * d
    out: dict[str, Shape] = {
        p + "attn.q.weight": (q, h),
        p + "attn.k.weight": (kv, h),
        p + "attn.v.weight": (kv, h),
        p + "attn.o.weight": (h, q),
    }
    if cfg.qkv_bias:
        out.update({p + "attn.q.bias": (q,), p + "attn.k.bias": (kv,), p + "attn.v.bias": (kv,)})
    if cfg.o_bias:
        out[p + "attn.o.bias"] = (h,)
    if cfg.qk_norm == "head":
        out.update({p + "attn.q_norm.weight": (d,), p + "attn.k_norm.weight": (d,)})
    elif cfg.qk_norm == "full":
        out.update({p + "attn.q_norm.weight": (q,), p + "attn.k_norm.weight": (kv,)})
    return out


def _mla(cfg: ArchConfig, p: str) -> dict[str, Shape]:
    mla = cfg.mla
    assert mla is not None
    h, n = cfg.hidden_size, cfg.num_heads
    q_out = n * (mla.qk_nope_head_dim + mla.qk_rope_head_dim)
    out: dict[str, Shape] = {}
    if mla.q_lora_rank is None:
        out[p + "attn.q.weight"] = (q_out, h)
    else:
        out[p + "attn.q_a.weight"] = (mla.q_lora_rank, h)
        out[p + "attn.q_a_norm.weight"] = (mla.q_lora_rank,)
        out[p + "attn.q_b.weight"] = (q_out, mla.q_lora_rank)
    out[p + "attn.kv_a.weight"] = (mla.kv_lora_rank + mla.qk_rope_head_dim, h)
    out[p + "attn.kv_a_norm.weight"] = (mla.kv_lora_rank,)
    out[p + "attn.kv_b.weight"] = (n * (mla.qk_nope_head_dim + mla.v_head_dim), mla.kv_lora_rank)
    out[p + "attn.o.weight"] = (h, n * mla.v_head_dim)
    return out


def _ffn(p: str, hidden: int, inner: int) -> dict[str, Shape]:
    return {
        p + "gate.weight": (inner, hidden),
        p + "up.weight": (inner, hidden),
        p + "down.weight": (hidden, inner),
    }
