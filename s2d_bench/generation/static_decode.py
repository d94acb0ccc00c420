"""The compiled decode step: a static-shape KV cache and one `torch.compile`d forward per step.

At a real model's size on a GPU the eager sampler is bound by per-step overhead, not arithmetic:
a decode step of a 1.7B model is a few hundred small kernels, each launched from Python, and the
cache grows (new shapes) every step. Here the batch, the cache and the attention mask keep one
shape for the whole batch, so the step is compiled once (inductor on the CPU; CUDA graphs through
`mode="reduce-overhead"` on a GPU, which replays the step's kernels with one launch) and the
prefill stays eager (its shape is each batch's prompt length).

The static shape costs what the eager loop saves elsewhere: no shared-prefix attention (the
prompt's cache is copied k times) and no eviction of finished prompts (every row decodes until
all have stopped). Tokens are the eager loop's: each prompt's generator gives the same uniforms
(k per prompt and step, drawn in blocks of steps by `sampling.UniformStream`; a finished prompt's
draws are never used) and `sampling.next_token` picks from the same logits, up to float rounding (tested).
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers import PreTrainedModel, StaticCache

from s2d_bench.generation.sampling import Sampling, UniformStream, decoding, next_token
from s2d_bench.models.sequences import positions

MODES = {"cpu": "default", "cuda": "reduce-overhead"}  # inductor's kernels on the CPU; CUDA graphs on a GPU
BUCKET = 256  # cache lengths are rounded up to a multiple: batches of other prompt lengths reuse one compiled step

STEP, CACHE = "_s2d_decode_step", "_s2d_static_cache"  # kept on the model itself: they live and die with it


def compiled_step(model: PreTrainedModel) -> Callable:
    """The model's decode forward, compiled for static shapes (recompiled only for a new batch or cache shape), compiled
    once per model object and kept on it (a registry beside it would keep every model a run ever sampled alive)."""
    if STEP not in model.__dict__:
        mode = MODES["cuda" if model.device.type == "cuda" else "cpu"]
        model.__dict__[STEP] = torch.compile(model.forward, mode=mode, dynamic=False, fullgraph=False)
    return model.__dict__[STEP]


def cache_length(prompt_tokens: int, max_new_tokens: int) -> int:
    return -(-(prompt_tokens + max_new_tokens) // BUCKET) * BUCKET


def _cache(model: PreTrainedModel, rows: int, length: int) -> StaticCache:
    """A static cache of this shape, emptied; the same object (so the same buffers, which CUDA graphs replay on) for
    every batch of the shape. Only the last shape is kept on the model: a cache of a 1.7B model at 8 x 4k is 0.9 GiB."""
    shape, cache = model.__dict__.get(CACHE, (None, None))
    if shape != (rows, length):
        cache = StaticCache(config=model.config, max_cache_len=length)
        model.__dict__[CACHE] = ((rows, length), cache)
    cache.reset()
    return cache


@torch.no_grad()
def sample_static(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    s: Sampling,
    eos_id: int | list[int],
    pad_id: int,
    seeds: list[int],
    vocab: int | None = None,
    compiled: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sampling.sample`'s contract (ids (B*k, T), mask (B*k, T), row i*k + j sample j of prompt i from seeds[i]) with
    the decode step compiled (`compiled_step`) or, `compiled=False`, the same static-shape loop run eagerly."""
    with decoding(model, prompt_ids, eos_id, seeds) as (eos, gens):
        return _decode(model, compiled, prompt_ids.repeat_interleave(s.k, 0), prompt_mask.repeat_interleave(s.k, 0), s, eos, pad_id, gens, vocab)


SYNC_EVERY = 16  # steps between the host's checks that every row has stopped: each check waits for the GPU


def _decode(model, compiled: bool, ids, prompt_mask, s: Sampling, eos, pad_id: int, gens, vocab):  # noqa: ANN001
    """The loop keeps the device busy: the uniforms are on it a block of steps at a time, the cache positions are views of
    one tensor, and the host asks whether all rows have stopped every `SYNC_EVERY` steps; steps past the last stop
    write pad ids and are cut off, so the result is the eager loop's."""
    n, p = ids.shape
    device = ids.device
    length = cache_length(p, s.max_new_tokens)
    step = compiled_step(model) if compiled else model.forward
    cache = _cache(model, n, length) if compiled else StaticCache(config=model.config, max_cache_len=length)
    mask = torch.zeros((n, length), dtype=prompt_mask.dtype, device=device)
    mask[:, :p] = prompt_mask
    pos = positions(prompt_mask)
    cache_positions = torch.arange(length, device=device)
    out = model(input_ids=ids, attention_mask=mask[:, :p], position_ids=pos, past_key_values=cache, use_cache=True,
                cache_position=cache_positions[:p], logits_to_keep=1)
    logits = out.logits[:, -1]
    next_pos = pos[:, -1:] + 1
    stream = UniformStream(gens, s.k, device) if s.temperature > 0 else None
    tokens = torch.full((n, s.max_new_tokens), pad_id, dtype=torch.long, device=device)
    alive = torch.zeros((n, s.max_new_tokens), device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for t in range(s.max_new_tokens):
        tok = torch.where(done, pad_id, next_token(logits[:, :vocab], s, stream.at(t) if stream is not None else None))
        tokens[:, t], alive[:, t] = tok, (~done).float()
        done = done | torch.isin(tok, eos)
        if t + 1 == s.max_new_tokens or ((t + 1) % SYNC_EVERY == 0 and bool(done.all())):
            break
        mask[:, p + t] = 1
        out = step(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache, use_cache=True,
                   cache_position=cache_positions[p + t : p + t + 1])
        logits = out.logits[:, -1].clone()  # a CUDA graph's output buffer is overwritten by the next replay
        next_pos = next_pos + 1
    steps = int(alive.any(0).nonzero().max()) + 1  # the eager loop stops at the step where the last row stopped
    return tokens[:, :steps], alive[:, :steps]
