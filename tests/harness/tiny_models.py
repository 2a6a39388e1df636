"""Tiny random Hugging Face models of each architecture, and transformers as their oracle.

Weights are drawn with std 0.1 so that nothing is near-flat: a wrong RoPE, a missing norm
or a swapped projection changes the logits far beyond the tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

VOCAB = 128

CONFIGS = {
    "llama": dict(
        model_type="llama",
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    ),
    "llama3_scaled": dict(
        model_type="llama",
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
        tie_word_embeddings=True,
    ),
    "qwen2": dict(
        model_type="qwen2",
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=1184,  # > 36 blocks of 32: prefill splits the down product's K
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=False,
    ),
    "gemma3": dict(
        model_type="gemma3_text",
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=1184,  # > 36 blocks of 32: prefill splits the down product's K
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        rope_local_base_freq=10000.0,
        sliding_window=4,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        query_pre_attn_scalar=16,
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        tie_word_embeddings=True,
    ),
}


CHAT_VOCAB = 384
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CONFIGS["llama_chat"] = {**CONFIGS["llama"], "vocab_size": CHAT_VOCAB}
CONFIGS["mixtral"] = {
    **CONFIGS["llama"],
    "model_type": "mixtral",
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
}
CONFIGS["qwen2_moe"] = {
    **CONFIGS["qwen2"],
    "model_type": "qwen2_moe",
    "num_experts": 8,
    "num_experts_per_tok": 4,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 80,
    "norm_topk_prob": False,
}
CONFIGS["qwen3_moe"] = {
    **CONFIGS["qwen2"],
    "model_type": "qwen3_moe",
    "head_dim": 16,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 48,
    "norm_topk_prob": True,
}
CONFIGS["olmoe"] = {
    **CONFIGS["llama"],
    "model_type": "olmoe",
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "intermediate_size": 48,
    "norm_topk_prob": False,
}
CONFIGS["mixtral_chat"] = {**CONFIGS["mixtral"], "vocab_size": CHAT_VOCAB}
DENSE = ("gemma3", "llama", "llama3_scaled", "qwen2")
MOE = ("mixtral", "olmoe", "qwen2_moe", "qwen3_moe")
_CORPUS = [
    "Hello there! How are you today? I am fine, thank you.",
    "The quick brown fox jumps over the lazy dog 12345 times.",
    "def add(a, b):\n    return a + b  # numbers: 3.14, 2026",
    "Chat with a tiny model: user, assistant, system. Café, naïve, 東京.",
]


def add_chat_tokenizer(model_dir: Path) -> Path:
    """Give a model folder a small trained byte-level BPE with ChatML special tokens, as a
    real ``tokenizer.json`` + ``tokenizer_config.json`` (chat template, eos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=CHAT_VOCAB,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    assert tok.get_vocab_size() <= CHAT_VOCAB
    tok.save(str(model_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "chat_template": CHATML,
    }
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    return model_dir


def reference_chat_ids(model_dir: Path, messages: list[dict[str, str]]) -> list[int]:
    """transformers' rendering and tokenization of a chat (the prompt a model sees)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def make_model(name: str, out: Path, seed: int = 0) -> Path:
    """Write a tiny random HF model folder (config.json + model.safetensors)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = dict(CONFIGS[name])
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    model.save_pretrained(out)
    if name.endswith("_chat"):
        add_chat_tokenizer(out)
    return out


def reference_logits(model_dir: Path, token_ids: list[int]) -> np.ndarray:
    """transformers' float32 CPU logits at every position, shape (len(token_ids), vocab)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([token_ids]))
    return out.logits[0].numpy()


def reference_greedy(model_dir: Path, token_ids: list[int], count: int) -> list[int]:
    """Greedy continuation by plain argmax over transformers' logits (no generation config,
    so no end-of-sequence handling or logits processors get in the way)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    ids = list(token_ids)
    with torch.no_grad():
        for _ in range(count):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(token_ids) :]
