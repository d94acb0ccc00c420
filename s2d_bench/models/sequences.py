"""Prompt/completion batches: rendered prompts, left-padded; completions right-padded.

Every training loop and every backend builds its inputs here, so that "which logit scores which
completion token" is decided once: the logit at position P + t - 1 scores completion token t.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.generation.protocol import render


def encode_completions(tok: PreTrainedTokenizerBase, completions: list[str]) -> list[list[int]]:
    """Completion text plus the end-of-turn token the model must learn to emit."""
    ids = tok(list(completions), add_special_tokens=False)["input_ids"] if completions else []  # one call: a fast tokenizer's batch
    return [row + [tok.eos_token_id] for row in ids]


@dataclass
class Batch:
    """Prompts and completions joined into one left-aligned-by-prompt tensor.

    input_ids, attention_mask, position_ids: (N, P + T); completion_ids, completion_mask: (N, T).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    prompt_len: int

    def rows(self, rows: slice) -> "Batch":
        """The sequences `rows` (a micro-batch); their prompts keep the batch's left padding."""
        pick = {k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in self.__dict__.items()}
        return Batch(**pick)

    def to(self, device: torch.device | str) -> "Batch":
        move = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.__dict__.items()}
        return Batch(**move)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (N, max_len) int64, rows aligned to the right edge (prompts)."""
    return _pad(rows, pad_id, left=True)


def right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (N, max_len) int64, rows aligned to the left edge (completions: mask 1 up to and including
    the stop token)."""
    return _pad(rows, pad_id, left=False)


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One tensor from padded Python lists and the mask from the lengths, the same ids and mask as a row at a time (a
    tensor and two slice writes a row), which was most of `rollouts_from_tokens` for GRPO's 256 rollouts (9.2 to 13.9
    ms a call, 3.0 to 3.3 now) and a quarter of a pretraining step's data (`join_texts` of 128 examples: 17.8 to 18.1
    ms, 13.3 to 14.4 now; benchmarks/batch_building.py, one thread, 2026-12-06)."""
    lengths = [len(r) for r in rows]
    width = max(lengths)
    pads = [[pad_id] * (width - n) for n in lengths]
    padded = [pad + list(r) for pad, r in zip(pads, rows)] if left else [list(r) + pad for pad, r in zip(pads, rows)]
    ids = torch.tensor(padded, dtype=torch.long)  # (N, width): every padded row is `width` long, empty ones too ((N, 0))
    columns, sizes = torch.arange(width), torch.tensor(lengths)[:, None]
    mask = columns >= width - sizes if left else columns < sizes
    return ids, mask.long()


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding aware)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def join(prompt_ids: list[list[int]], completion_ids: torch.Tensor, completion_mask: torch.Tensor, pad_id: int) -> Batch:
    """Join prompts (lists) with completions (N, T) and their mask (1 up to and including EOS)."""
    p_ids, p_mask = left_pad(prompt_ids, pad_id)
    input_ids = torch.cat([p_ids, completion_ids.cpu()], dim=1)
    attention_mask = torch.cat([p_mask, completion_mask.cpu().long()], dim=1)
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions(attention_mask),
        completion_ids=completion_ids.cpu(),
        completion_mask=completion_mask.cpu().float(),
        prompt_len=p_ids.shape[1],
    )


def join_texts(tok: PreTrainedTokenizerBase, prompts: list[str], completions: list[str], thinking: bool = False) -> Batch:
    """A batch from prompt and completion strings (teacher-forcing data such as pretraining), prompts
    rendered by the one prompt protocol (`generation.protocol.render`)."""
    ids, mask = right_pad(encode_completions(tok, completions), tok.pad_token_id)
    return join(render(tok, prompts, thinking), ids, mask, tok.pad_token_id)


def completion_logits(model: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """Logits that score each completion token: (N, T, V)."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    p = batch.prompt_len
    return out.logits[:, p - 1 : -1].float()


def completion_hidden(model: PreTrainedModel, batch: Batch, share_prompts: bool = False) -> torch.Tensor:
    """Final hidden states that predict each completion token: (N, T, H), no logits made.

    The language-model head (`model.get_output_embeddings()`) maps them to `completion_logits`;
    `s2d_bench.chunked` applies it a chunk at a time so (N, T, V) never exists at once.

    share_prompts: run each run of consecutive rows with the same prompt (GRPO's k samples of a prompt) through the
    prompt once, and the completions on that prompt's keys and values (`shared_prompt_hidden`). The caller decides, not
    the data: under ZeRO-3 every rank must make as many module calls. Off under activation checkpointing, whose
    recomputation would append to the cache again.
    """
    decoder = model.get_decoder()
    if share_prompts and not model.is_gradient_checkpointing:
        return shared_prompt_hidden(decoder, batch)
    out = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    p = batch.prompt_len
    return out.last_hidden_state[:, p - 1 : -1]


def prompt_runs(batch: Batch) -> list[int]:
    """Lengths of the runs of consecutive rows whose prompts (ids and padding) are the same, in row order."""
    p = batch.prompt_len
    key = torch.cat([batch.input_ids[:, :p], batch.attention_mask[:, :p]], dim=1)
    starts = [0, *((key[1:] != key[:-1]).any(dim=1).nonzero().flatten() + 1).tolist()]
    return [b - a for a, b in zip(starts, starts[1:] + [len(key)])]


def expand_runs(x: torch.Tensor, runs: list[int]) -> torch.Tensor:
    """Row i of x repeated runs[i] times, (len(runs), ...) -> (sum(runs), ...). Broadcast views, so the backward sums
    each run's gradients in a fixed order (no scatter: the same bits on every run, on a GPU too)."""
    if len(set(runs)) == 1:
        return x.unsqueeze(1).expand(x.shape[0], runs[0], *x.shape[1:]).reshape(-1, *x.shape[1:])
    return torch.cat([x[i : i + 1].expand(n, *x.shape[1:]) for i, n in enumerate(runs)])


def shared_prompt_hidden(decoder: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """`completion_hidden` with each distinct prompt computed once: for GRPO's k samples of a prompt the prompt's
    positions (most of a short answer's tokens) cost 1/k of a forward and backward. Its keys and values are broadcast
    to the run's rows as a KV cache that keeps its gradient, and the completions attend to them as they would in one
    forward (equal up to float rounding: tested)."""
    p, runs = batch.prompt_len, prompt_runs(batch)
    first = [0, *itertools.accumulate(runs[:-1])]  # each run's first row
    prompt = decoder(input_ids=batch.input_ids[first, :p], attention_mask=batch.attention_mask[first, :p],
                     position_ids=batch.position_ids[first, :p], use_cache=True)  # whatever the model's config says
    cache = prompt.past_key_values
    for layer in cache.layers:
        layer.keys, layer.values = expand_runs(layer.keys, runs), expand_runs(layer.values, runs)
    rest = decoder(input_ids=batch.input_ids[:, p:], attention_mask=batch.attention_mask, position_ids=batch.position_ids[:, p:],
                   past_key_values=cache)
    last = expand_runs(prompt.last_hidden_state[:, -1:], runs)  # the prompt's last position predicts completion token 0
    return torch.cat([last, rest.last_hidden_state[:, :-1]], dim=1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under `logits`: (N, T, V), (N, T) -> (N, T)."""
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
