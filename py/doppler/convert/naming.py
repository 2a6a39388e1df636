"""Map GGUF (llama.cpp) and Hugging Face tensor names to RDRR's canonical names.

Canonical scheme (documented in docs/rdrr.md "Tensor names"): globals ``embed.weight``,
``output_norm.weight``, ``lm_head.weight``, ``rope_freqs.weight``; per layer
``layers.{L}.`` + ``attn_norm``, ``attn.{q,k,v,o}``, ``attn.{q,k}_norm``, MLA
``attn.{q_a,q_a_norm,q_b,kv_a,kv_a_norm,kv_b}``, ``post_attn_norm``, ``ffn_norm``,
``post_ffn_norm``, ``ffn.{gate,up,down}``, ``router`` (+ ``router.score_bias``),
``shared.ffn.{gate,up,down}``, ``shared.gate``, ``experts.{E}.ffn.{gate,up,down}``, and
DeepSeek MTP ``mtp.{enorm,hnorm,eh_proj,head_norm}``; each followed by ``.weight``/``.bias``.
"""

import re

from doppler.format.errors import SourceError

_GGUF_GLOBAL = {
    "token_embd.weight": "embed.weight",
    "output_norm.weight": "output_norm.weight",
    "output.weight": "lm_head.weight",
    "rope_freqs.weight": "rope_freqs.weight",
}
_GGUF_LAYER = {
    "attn_norm": "attn_norm",
    "attn_q": "attn.q",
    "attn_k": "attn.k",
    "attn_v": "attn.v",
    "attn_output": "attn.o",
    "attn_q_norm": "attn.q_norm",
    "attn_k_norm": "attn.k_norm",
    "post_attention_norm": "post_attn_norm",
    "ffn_norm": "ffn_norm",
    "post_ffw_norm": "post_ffn_norm",
    "ffn_gate": "ffn.gate",
    "ffn_up": "ffn.up",
    "ffn_down": "ffn.down",
    "ffn_gate_inp": "router",
    "ffn_gate_shexp": "shared.ffn.gate",
    "ffn_up_shexp": "shared.ffn.up",
    "ffn_down_shexp": "shared.ffn.down",
    "ffn_gate_inp_shexp": "shared.gate",
}
_GGUF_EXPERTS = {"ffn_gate_exps": "gate", "ffn_up_exps": "up", "ffn_down_exps": "down"}
_GGUF_BLOCK = re.compile(r"blk\.(0|[1-9][0-9]*)\.([a-z_]+)\.(weight|bias)")

# HF suffixes after "model.layers.{L}." (regex -> canonical suffix, "{E}" = expert group).
_E = r"(0|[1-9][0-9]*)"
_HF_LAYER: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), c)
    for p, c in (
        (r"input_layernorm\.weight", "attn_norm.weight"),
        (r"pre_feedforward_layernorm\.weight", "ffn_norm.weight"),
        (r"post_feedforward_layernorm\.weight", "post_ffn_norm.weight"),
        (r"self_attn\.(q|k|v|o)_proj\.(weight|bias)", r"attn.\1.\2"),
        (r"self_attn\.(q|k)_norm\.weight", r"attn.\1_norm.weight"),
        (r"self_attn\.(q_a|q_b|kv_b)_proj\.weight", r"attn.\1.weight"),
        (r"self_attn\.kv_a_proj_with_mqa\.weight", "attn.kv_a.weight"),
        (r"self_attn\.(q_a|kv_a)_layernorm\.weight", r"attn.\1_norm.weight"),
        (r"mlp\.(gate|up|down)_proj\.weight", r"ffn.\1.weight"),
        (r"(?:mlp|block_sparse_moe)\.gate\.weight", "router.weight"),
        (r"mlp\.gate\.e_score_correction_bias", "router.score_bias"),
        (
            rf"mlp\.experts\.{_E}\.(gate|up|down)_proj\.weight",
            r"experts.\1.ffn.\2.weight",
        ),
        (rf"block_sparse_moe\.experts\.{_E}\.w1\.weight", r"experts.\1.ffn.gate.weight"),
        (rf"block_sparse_moe\.experts\.{_E}\.w3\.weight", r"experts.\1.ffn.up.weight"),
        (rf"block_sparse_moe\.experts\.{_E}\.w2\.weight", r"experts.\1.ffn.down.weight"),
        (r"mlp\.shared_experts?\.(gate|up|down)_proj\.weight", r"shared.ffn.\1.weight"),
        (r"mlp\.shared_expert_gate\.weight", "shared.gate.weight"),
        (r"(enorm|hnorm|eh_proj)\.weight", r"mtp.\1.weight"),
        (r"shared_head\.norm\.weight", "mtp.head_norm.weight"),
    )
]
_HF_LAYER_PREFIX = re.compile(r"model\.layers\.(0|[1-9][0-9]*)\.(.+)")
# Tensors a checkpoint may carry that RDRR derives or shares instead of storing.
_HF_SKIP = re.compile(
    r"model\.layers\.\d+\.(self_attn\.rotary_emb\.inv_freq|embed_tokens\.weight"
    r"|shared_head\.head\.weight)"
)
_HF_GLOBAL = {
    "model.embed_tokens.weight": "embed.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "lm_head.weight",
}


def gguf_name(name: str) -> tuple[str, str | None]:
    """(canonical name, None), or for merged expert tensors (template with ``{E}``, part)."""
    if name in _GGUF_GLOBAL:
        return _GGUF_GLOBAL[name], None
    match = _GGUF_BLOCK.fullmatch(name)
    if match:
        layer, part, kind = match.groups()
        if part in _GGUF_LAYER:
            return f"layers.{layer}.{_GGUF_LAYER[part]}.{kind}", None
        if part in _GGUF_EXPERTS and kind == "weight":
            return f"layers.{layer}.experts.{{E}}.ffn.{_GGUF_EXPERTS[part]}.weight", part
    raise SourceError(f"GGUF tensor {name!r} has no canonical name (unsupported tensor)")


def hf_name(name: str, arch: str) -> str | None:
    """Canonical name of an HF tensor, or None for tensors RDRR does not store."""
    if name in _HF_GLOBAL:
        return _HF_GLOBAL[name]
    if _HF_SKIP.fullmatch(name):
        return None
    match = _HF_LAYER_PREFIX.fullmatch(name)
    if match:
        layer, rest = match.groups()
        if rest == "post_attention_layernorm.weight":
            # Gemma's post-attention norm is a sandwich norm; elsewhere it is the pre-FFN norm.
            return f"layers.{layer}." + (
                "post_attn_norm.weight" if arch == "gemma3" else "ffn_norm.weight"
            )
        for pattern, repl in _HF_LAYER:
            if pattern.fullmatch(rest):
                return f"layers.{layer}.{pattern.sub(repl, rest)}"
    raise SourceError(f"safetensors tensor {name!r} has no canonical name (unsupported tensor)")
