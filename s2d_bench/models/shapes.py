"""The shapes (config.json values) of the checkpoints the shipped configs name, so `s2d-bench plan` can estimate a
paper config's memory offline, before its weights are downloaded. Only what the estimate reads; a model given as a
local folder is read from its own config.json instead."""

from __future__ import annotations

from typing import Any

SHAPES: dict[str, tuple[str, dict[str, Any]]] = {  # hub id -> (model_type, config fields), from each model card's config.json
    "Qwen/Qwen3-8B": ("qwen3", dict(num_hidden_layers=36, hidden_size=4096, intermediate_size=12288, num_attention_heads=32,
                                     num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=False)),
    "Qwen/Qwen3-1.7B": ("qwen3", dict(num_hidden_layers=28, hidden_size=2048, intermediate_size=6144, num_attention_heads=16,
                                       num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True)),
    "meta-llama/Llama-3.3-70B-Instruct": ("llama", dict(num_hidden_layers=80, hidden_size=8192, intermediate_size=28672,
                                                         num_attention_heads=64, num_key_value_heads=8, vocab_size=128256)),
    "meta-llama/Llama-3.1-8B-Instruct": ("llama", dict(num_hidden_layers=32, hidden_size=4096, intermediate_size=14336,
                                                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)),
}


def known_config(hub_id: str):  # noqa: ANN201 - a transformers PretrainedConfig, or None
    """The config of a checkpoint in `SHAPES`, built without the hub; None for any other model."""
    if hub_id not in SHAPES:
        return None
    from transformers import AutoConfig

    kind, fields = SHAPES[hub_id]
    return AutoConfig.for_model(kind, **fields)
