"""Batched sampling with a KV cache: each prompt is prefilled once, then expanded to k samples.

`transformers.generate(num_return_sequences=k)` repeats every prompt k times before the prefill;
for avg@16 that is 16x the prefill work. Here the prompt cache is computed once; on a model
switched to shared-prefix attention (the evaluation engines) it is never copied either,
otherwise it is `repeat_interleave`d. The loop also returns the exact token ids and mask that
training needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from s2d_bench.harness.shared_prefix import KWARG, prefill, supports_shared_prefix
from s2d_bench.models.sequences import positions


@dataclass(frozen=True)
class Sampling:
    k: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 16


def next_token(logits: torch.Tensor, s: Sampling, generator: torch.Generator) -> torch.Tensor:
    """Sample one token per row from (N, V) logits with temperature, top-k and top-p.

    Temperature 0 is greedy decoding (argmax), as in vLLM and lm-eval.
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
        drop = probs.cumsum(-1) - probs > s.top_p  # keep the smallest prefix with mass >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    s: Sampling,
    eos_id: int | list[int],
    pad_id: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k completions per left-padded prompt: (B, P) -> ids (B*k, T), mask (B*k, T).

    Row i*k + j is sample j of prompt i. The mask is 1 up to and including EOS (any of
    `eos_id` when it is a list: Qwen3 ends turns with either of two tokens); ids after EOS are
    `pad_id`. T <= s.max_new_tokens (the loop stops when every row has ended).
    """
    eos = torch.tensor(eos_id if isinstance(eos_id, list) else [eos_id], device=prompt_ids.device)
    was_training = model.training
    model.eval()
    pos = positions(prompt_mask)
    if supports_shared_prefix(model):  # the prompt cache stays at batch B; see shared_prefix.py
        logits, cache = prefill(model, prompt_ids, prompt_mask, s.k, s.max_new_tokens)
        extra, mask = {KWARG: cache}, None
    else:
        out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=pos, past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1)
        cache, extra, logits = out.past_key_values, {}, out.logits[:, -1]
        cache.batch_repeat_interleave(s.k)
        mask = prompt_mask.repeat_interleave(s.k, dim=0)
    logits = logits.repeat_interleave(s.k, dim=0)
    next_pos = pos[:, -1:].repeat_interleave(s.k, dim=0) + 1
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    tokens, alive = [], []
    for _ in range(s.max_new_tokens):
        tok = next_token(logits, s, generator)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        tokens.append(tok)
        alive.append(~done)
        done = done | torch.isin(tok, eos)
        if bool(done.all()):
            break
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache, use_cache=True, **extra)
        logits = out.logits[:, -1]
        next_pos = next_pos + 1
    model.train(was_training)
    return torch.stack(tokens, dim=1), torch.stack(alive, dim=1).float()
