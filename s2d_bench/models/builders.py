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


def tiny_qwen3(shape: Qwen3Shape, seed: int = 0, tok: PreTrainedTokenizerBase | None = None,
               vocab_size: int | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A random Qwen3 of `shape` on `tok` (the character tokenizer unless given), with `vocab_size` embedding rows
    (the tokenizer's length unless given: real checkpoints pad it, Qwen3-1.7B to 151,936, Qwen2.5-7B to 152,064)."""
    tok = tok or char_tokenizer()
    vocab_size = vocab_size or len(tok)
    if vocab_size < len(tok):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's {len(tok)} entries")
    cfg = Qwen3Config(
        vocab_size=vocab_size,
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


QWEN3_PADDED, QWEN25_PADDED = 151_936, 152_064  # embedding rows of Qwen3-1.7B and Qwen2.5-7B on one 151,669-entry tokenizer
BPE_SHAPE = Qwen3Shape(layers=2, hidden=32, heads=2, kv_heads=1, mlp=64)  # the embedding is most of it: 151,936 x 32


def tiny_qwen3_bpe_151936(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """On the real Qwen vocabulary (qwen_bpe.py), padded as Qwen3-1.7B is."""
    from s2d_bench.models.qwen_bpe import qwen_tokenizer

    return tiny_qwen3(BPE_SHAPE, seed, qwen_tokenizer(), QWEN3_PADDED)


def tiny_qwen3_bpe_152064(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """On the real Qwen vocabulary, padded as Qwen2.5-7B is: the size gap that broke TRL's GKD (huggingface/trl#2215)."""
    from s2d_bench.models.qwen_bpe import qwen_tokenizer

    return tiny_qwen3(BPE_SHAPE, seed, qwen_tokenizer(), QWEN25_PADDED)


def load_pretrained(path_or_id: str, device: str | None = "cpu", dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local directory or a hub id (float32 unless told); device None
    leaves the model where loading put it (ZeRO-3 partitions: on each rank's device already)."""
    ref = resolve_model(path_or_id)
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype, **load_kwargs(ref))
    except (OSError, ValueError) as exc:  # an unknown architecture, a hub id without weights
        raise UserError(f"cannot load model '{path_or_id}': {str(exc).splitlines()[0]}") from None
    return (model.to(device) if device else model), sampling_tokenizer(ref)


def sampling_tokenizer(ref: str) -> PreTrainedTokenizerBase:
    """`load_tokenizer` set up for sampling and batches: left padding, EOS as the pad token when it has none."""
    tok = load_tokenizer(ref)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


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
    """Distillation compares distributions token by token: the pair must share one tokenizer vocabulary. Their
    models' embedding sizes may differ (padding past the tokenizer): the losses compare the shared rows."""
    if teacher_tok.get_vocab() != student_tok.get_vocab():
        raise UserError(
            f"teacher and student tokenizers have different vocabularies (teacher {len(teacher_tok):,} entries, student "
            f"{len(student_tok):,} entries, or the same ids for other tokens); token-level KL needs one shared vocabulary: "
            "pick a teacher/student pair from the same model family (padded embedding sizes may differ)"
        )
    if teacher_tok.chat_template != student_tok.chat_template:
        raise UserError("teacher and student chat templates differ: prompts would be rendered differently; use one family's pair")
