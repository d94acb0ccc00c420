"""Batched sampling with a KV cache: each prompt is prefilled once, then expanded to k samples.

`transformers.generate(num_return_sequences=k)` repeats every prompt k times before the prefill;
for avg@16 that is 16x the prefill work. Here the prompt cache is computed once; on a model
switched to shared-prefix attention (`shared_prefix.sharing_prompts`, which the hf engine uses for
evaluation and rollouts alike) it is never copied either, otherwise it is `repeat_interleave`d.
The loop also returns the exact token ids and mask that training needs. A prompt whose samples
have all stopped leaves the decode batch, so a step's cost follows the prompts still generating.

Randomness is per prompt: prompt i has its own generator (seeded by the caller, see
`protocol.prompt_seeds`) that draws k uniforms a step, one per sample, and a token is drawn by
inverting the cumulative distribution at that uniform. A prompt's samples therefore depend on its
seed and its logits only, not on the batch it shares, so batches can be split across ranks or
memory-sized without changing a token, up to float rounding: a prompt's logits themselves can
move with the batch's size where the matmul kernel changes with it (measured: a 5-token prompt's
logits moved by 2e-7 in batches of 3 or more rows; 17 to 200 tokens, 1 to 9 rows, bit for bit),
and a token flips only if its uniform falls that close to a boundary of the distribution.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from transformers import DynamicCache, PreTrainedModel

from s2d_bench.generation.shared_prefix import KWARG, prefill, sharing_prompts, supports_shared_prefix
from s2d_bench.models.sequences import positions


@dataclass(frozen=True)
class Sampling:
    k: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 16


class UniformStream:
    """The uniforms of every step: k per prompt from its own generator, (len(gens) * k,) float64 a step, prompt-major
    (row i*k + j), drawn `block` steps at a time.

    A CPU generator's stream does not depend on how it is cut (tested), so one draw of block x k per prompt gives
    exactly what a draw of k per prompt at every step would, with one call per prompt and one host-to-device copy per
    block instead of per step.
    Prompts that have stopped keep drawing (their values are never used), which changes no other prompt's."""

    def __init__(self, gens: list[torch.Generator], k: int, device: torch.device | str, block: int = 256) -> None:
        self.gens, self.k, self.device, self.block = gens, k, device, block
        self.start, self.rows = 0, torch.empty(0, len(gens) * k, dtype=torch.float64)

    def at(self, t: int) -> torch.Tensor:
        """(len(gens) * k,) float64 on the device: step t's uniforms, prompt-major (row i*k + j); t counts up from 0."""
        if t >= self.start + self.rows.shape[0]:
            self.start += self.rows.shape[0]
            draws = torch.stack([torch.rand(self.block * self.k, generator=g, dtype=torch.float64) for g in self.gens])
            self.rows = draws.view(len(self.gens), self.block, self.k).transpose(0, 1).reshape(self.block, -1).to(self.device)
        return self.rows[t - self.start]


def generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per prompt: the same tokens on CPU and GPU for the same logits."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def next_token(logits: torch.Tensor, s: Sampling, uniforms: torch.Tensor | None) -> torch.Tensor:
    """Sample one token per row from (N, V) logits with temperature, top-k and top-p.

    `uniforms` (N,) in [0, 1) picks the token by inverse CDF: row n takes the first token whose
    cumulative probability exceeds u_n (a token of probability 0 is never taken). Temperature 0 is
    greedy decoding (argmax), as in vLLM and lm-eval.
    """
    if s.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / s.temperature
    if s.top_k > 0:
        kth = torch.topk(logits, min(s.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs >= s.top_p  # keep the smallest prefix with mass >= top_p (as HF and vLLM do)
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    cdf = torch.softmax(logits, dim=-1).double().cumsum(dim=-1)
    target = uniforms.to(cdf.device)[:, None] * cdf[:, -1:]  # scaled by the total: rounding never runs off the end
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=logits.shape[-1] - 1)


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    s: Sampling,
    eos_id: int | list[int],
    pad_id: int,
    seeds: list[int],
    vocab: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k completions per left-padded prompt: (B, P) -> ids (B*k, T), mask (B*k, T).

    `vocab` (the tokenizer's length) bounds the ids drawn: rows of a padded embedding past it map to no
    token, and a random tiny model would draw them (a trained one gives them no mass), so they are never
    sampled and a teacher padded wider than its student never hands it an id the student has no row for.

    Row i*k + j is sample j of prompt i, drawn with the generator of `seeds[i]`. The mask is 1 up
    to and including EOS (any of `eos_id` when it is a list: Qwen3 ends turns with either of two
    tokens); ids after EOS are `pad_id`. T <= s.max_new_tokens (the loop stops when every row has ended).
    """
    with decoding(model, prompt_ids, eos_id, seeds) as (eos, gens), sharing_prompts(model):
        return _decode(model, prompt_ids, prompt_mask, s, eos, pad_id, gens, vocab)


@contextlib.contextmanager
def decoding(model: PreTrainedModel, prompt_ids: torch.Tensor, eos_id: int | list[int], seeds: list[int]) -> Iterator[tuple[torch.Tensor, list[torch.Generator]]]:
    """What every decode loop checks and holds: one seed per prompt (its generator), the stop ids as a tensor on the
    prompts' device, and the model in eval mode for the block (a trained model goes back to training after it)."""
    if len(seeds) != prompt_ids.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for {prompt_ids.shape[0]} prompts: one seed per prompt")
    eos = torch.tensor(eos_id if isinstance(eos_id, list) else [eos_id], device=prompt_ids.device)
    was_training = model.training
    model.eval()
    try:
        yield eos, generators(seeds)
    finally:
        model.train(was_training)


EVICT_SHARE = 0.25  # finished prompts leave the decode batch once they are this share of it: a few cache copies per batch


def _decode(model, prompt_ids, prompt_mask, s: Sampling, eos: torch.Tensor, pad_id: int, gens: list[torch.Generator], vocab: int | None):  # noqa: ANN001
    """The decode loop. A prompt whose k samples have all ended leaves the batch (its cache rows are dropped) once
    such prompts are `EVICT_SHARE` of the batch, so a step's cost and memory follow the prompts still generating;
    the others draw the same uniforms from their own generators, so no token changes."""
    pos = positions(prompt_mask)
    shared = supports_shared_prefix(model)
    if shared:  # the prompt cache stays at batch B; see shared_prefix.py
        logits, cache = prefill(model, prompt_ids, prompt_mask, s.k, s.max_new_tokens)
        extra, mask = {KWARG: cache}, None
    else:
        out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=pos, past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1)
        cache, extra, logits = out.past_key_values, {}, out.logits[:, -1]
        cache.batch_repeat_interleave(s.k)
        mask = prompt_mask.repeat_interleave(s.k, dim=0)
    logits = logits.repeat_interleave(s.k, dim=0)
    next_pos = pos[:, -1:].repeat_interleave(s.k, dim=0) + 1
    n, device = logits.shape[0], logits.device
    tokens = torch.full((n, s.max_new_tokens), pad_id, dtype=torch.long, device=device)
    alive = torch.zeros((n, s.max_new_tokens), device=device)
    live = torch.arange(len(gens), device=device)  # prompts still in the batch, by their index in the input
    rows = torch.arange(n, device=device)  # their rows (k a prompt)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    steps = 0
    stream = UniformStream(gens, s.k, device) if s.temperature > 0 else None
    for step in range(s.max_new_tokens):
        uniforms = stream.at(step)[rows] if stream is not None else None  # the rows of the prompts still in the batch
        tok = torch.where(done, pad_id, next_token(logits[:, :vocab], s, uniforms))
        tokens[rows, step], alive[rows, step] = tok, (~done).float()
        done = done | torch.isin(tok, eos)
        steps = step + 1
        if bool(done.all()):
            break
        finished = done.view(-1, s.k).all(dim=1)
        if int(finished.sum()) >= max(1, EVICT_SHARE * len(live)):
            keep = (~finished).nonzero().flatten()
            kept_rows = (keep[:, None] * s.k + torch.arange(s.k, device=device)).flatten()
            if shared:
                cache.keep_prompts(keep)
            else:
                cache.batch_select_indices(kept_rows)
                mask = mask[kept_rows]
            live, rows, tok, done, next_pos = live[keep], rows[kept_rows], tok[kept_rows], done[kept_rows], next_pos[kept_rows]
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache, use_cache=True, **extra)
        logits = out.logits[:, -1]
        next_pos = next_pos + 1
    return tokens[:, :steps], alive[:, :steps]
