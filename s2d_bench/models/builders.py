"""Named builders for tiny Qwen3-architecture models, and loading any model by path or hub id.

Every hyperparameter is spelled out in a `Qwen3Shape`; the builders return a fresh, randomly
initialised `Qwen3ForCausalLM` and the character tokenizer it was sized for. Real checkpoints
come in through `load_pretrained`, which takes a local directory or a hub id alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, Qwen3Config, Qwen3ForCausalLM

from s2d_bench.errors import UserError
from s2d_bench.models.refs import load_kwargs, resolve_model
from s2d_bench.models.tokenizer import char_tokenizer


@dataclass(frozen=True)
class Qwen3Shape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    mlp: int
    max_positions: int = 2048  # room for a MATH or AIME prompt through the character tokenizer


def tiny_qwen3(shape: Qwen3Shape, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tok = char_tokenizer()
    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=shape.hidden,
        intermediate_size=shape.mlp,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.hidden // shape.heads,
        max_position_embeddings=shape.max_positions,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(cfg), tok


def tiny_qwen3_teacher(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return tiny_qwen3(Qwen3Shape(layers=4, hidden=96, heads=4, kv_heads=2, mlp=256), seed)


def tiny_qwen3_student(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return tiny_qwen3(Qwen3Shape(layers=2, hidden=48, heads=2, kv_heads=1, mlp=128), seed)


def load_pretrained(path_or_id: str, device: str | None = "cpu", dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local directory or a hub id (float32 unless told); device None
    leaves the model where loading put it (ZeRO-3 partitions: on each rank's device already)."""
    ref = resolve_model(path_or_id)
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype, **load_kwargs(ref))
    except (OSError, ValueError) as exc:  # an unknown architecture, a hub id without weights
        raise UserError(f"cannot load model '{path_or_id}': {str(exc).splitlines()[0]}") from None
    tok = load_tokenizer(ref)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return (model.to(device) if device else model), tok


def load_tokenizer(ref: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a checked reference (refs.resolve_model); it must carry a chat template, which every prompt goes through."""
    tok = AutoTokenizer.from_pretrained(ref, **load_kwargs(ref))
    if not tok.chat_template:
        raise UserError(f"model '{ref}': its tokenizer has no chat template; every prompt is rendered through one "
                        "(save one with the tokenizer, e.g. chat_template.jinja)")
    return tok


def save(model: PreTrainedModel, tok: PreTrainedTokenizerBase, path: Path) -> None:
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)


def check_pair(teacher_tok: PreTrainedTokenizerBase, student_tok: PreTrainedTokenizerBase) -> None:
    """Distillation compares distributions token by token: the pair must share one vocabulary."""
    if teacher_tok.get_vocab() != student_tok.get_vocab():
        raise UserError(
            "teacher and student tokenizers have different vocabularies; token-level KL needs one "
            "shared vocabulary: pick a teacher/student pair from the same model family"
        )
    if teacher_tok.chat_template != student_tok.chat_template:
        raise UserError("teacher and student chat templates differ: prompts would be rendered differently; use one family's pair")
