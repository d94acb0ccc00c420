"""Shared-prefix decoding: k samples of one prompt read the prompt's KV cache once, not k times.

For avg@16 every prompt is sampled 16 times. The usual way (and transformers' `generate`)
copies the prompt's keys and values 16 times and then, at every decoding step, reads all 16
copies and re-concatenates the growing cache. Here the prompt cache stays at batch B, the
generated tokens' cache is a preallocated (B*k) buffer written in place, and attention is
computed in two parts joined by one softmax:

    scores = [q . K_prompt (shared by the k samples of a prompt) | q . K_generated (per sample)]

With prompts of P tokens and T generated ones, a step reads B*(P + k*T) cached positions
instead of B*k*(P + T): for MATH prompts (hundreds of tokens) and k = 16, most of the work.
The result equals ordinary attention up to float rounding (tested).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from transformers import AttentionInterface, AttentionMaskInterface, DynamicCache
from transformers.cache_utils import Cache, DynamicLayer
from transformers.masking_utils import sdpa_mask

from s2d_bench.models.attention import NAME as SDPA_GQA, sdpa_gqa_forward
from s2d_bench.models.sequences import positions

NAME = "s2d_shared_prefix"
KWARG = "s2d_shared_prefix"  # the forward keyword that carries the cache down to attention
LENGTHS = "s2d_prompt_lengths"  # the prefill's keyword: its rows grouped by real length (prompt_groups)


class SharedPrefixLayer(DynamicLayer):
    """One layer's cache: prompt keys/values at batch B, generated ones in a (B*k) buffer written in place.

    The buffer starts small and doubles when full, up to `capacity` (the token budget): memory
    follows what is generated, not the budget (32k tokens x 16 samples would not fit), and the
    copying stays linear in the generated length, where `torch.cat` per step is quadratic.
    """

    INITIAL = 256

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, k: int, capacity: int) -> None:
        super().__init__()
        self.prompt_keys, self.prompt_values, self.capacity = keys, values, capacity
        b, heads, _, dim = keys.shape
        size = min(capacity, self.INITIAL)
        self.gen_keys = keys.new_empty(b * k, heads, size, dim)
        self.gen_values = values.new_empty(b * k, heads, size, dim)
        self.length = 0
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True

    def _grow(self, needed: int) -> None:
        if needed > self.capacity:
            raise RuntimeError(f"shared-prefix cache full: capacity {self.capacity} tokens")
        size = min(self.capacity, max(needed, 2 * self.gen_keys.shape[-2]))
        for name in ("gen_keys", "gen_values"):
            old = getattr(self, name)
            new = old.new_empty(*old.shape[:2], size, old.shape[-1])
            new[:, :, : self.length] = old[:, :, : self.length]
            setattr(self, name, new)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key_states.shape[-2]
        if end > self.gen_keys.shape[-2]:
            self._grow(end)
        self.gen_keys[:, :, self.length : end] = key_states
        self.gen_values[:, :, self.length : end] = value_states
        self.length = end
        return self.gen_keys[:, :, :end], self.gen_values[:, :, :end]

    def get_seq_length(self) -> int:
        return self.prompt_keys.shape[-2] + self.length


class SharedPrefixCache(Cache):
    """Per layer, prompt keys/values (B, Hkv, P, D), left-padded, shared by the k samples of each prompt."""

    def __init__(self, prompt_kv: list[tuple[torch.Tensor, torch.Tensor]], prompt_mask: torch.Tensor, k: int, capacity: int) -> None:
        super().__init__(layers=[SharedPrefixLayer(keys, values, k, capacity) for keys, values in prompt_kv])
        self.k = k
        # Additive mask over prompt positions (left padding is -inf), shaped to broadcast over heads and queries.
        bias = torch.zeros(prompt_mask.shape, dtype=prompt_kv[0][0].dtype, device=prompt_mask.device)
        self.prompt_bias = bias.masked_fill(prompt_mask == 0, float("-inf"))[:, None, None, :]

    def keep_prompts(self, prompts: torch.Tensor) -> None:
        """Keep only the prompts at indices `prompts` (of the batch as it is now) and their k samples each."""
        rows = (prompts[:, None] * self.k + torch.arange(self.k, device=prompts.device)).flatten()
        for layer in self.layers:
            layer.prompt_keys, layer.prompt_values = layer.prompt_keys[prompts], layer.prompt_values[prompts]
            layer.gen_keys, layer.gen_values = layer.gen_keys[rows], layer.gen_values[rows]
        self.prompt_bias = self.prompt_bias[prompts]


def prefill(model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, k: int, capacity: int) -> tuple[torch.Tensor, SharedPrefixCache]:
    """Last-position logits (B, V) and the shared cache of left-padded prompts, in one batched forward.

    Positions count real tokens only (`positions`), so each prompt's keys equal its unpadded ones. Attention is causal
    over each prompt's own tokens (`prefill_attention`), never a padding mask, so the fused kernel skips the masked half;
    the keys and values at padding positions are zeroed (they are never attended: the cache's bias is -inf there).
    """
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions(prompt_mask), past_key_values=DynamicCache(),
                use_cache=True, logits_to_keep=1, **{LENGTHS: prompt_groups(prompt_mask.sum(1))})
    real = prompt_mask.bool()[:, None, :, None]
    prompt_kv = [(torch.where(real, layer.keys, 0), torch.where(real, layer.values, 0)) for layer in out.past_key_values.layers]
    return out.logits[:, -1], SharedPrefixCache(prompt_kv, prompt_mask, k, capacity)


def prompt_groups(lengths: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """(length, row indices) for each real length among left-padded rows: worked out once a prefill, not in every layer
    (on a GPU each `.tolist()` waits for the device)."""
    return [(length, (lengths == length).nonzero().flatten()) for length in lengths.unique().tolist()]


def prefill_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, groups: list[tuple[int, torch.Tensor]],
                      scaling: float | None) -> tuple[torch.Tensor, None]:
    """Causal attention of left-padded prompts, each over its own tokens: the rows of one length together (`groups`,
    from prompt_groups), unpadded.

    A padding mask keeps SDPA's fused kernel from skipping the upper triangle and makes every row as long as the
    longest: with MATH prompts (100-800 tokens, 8 a batch) that was most of an evaluation's prefill. Prompts of equal
    length (a task's templated prompts) are one call on the whole batch, the call an unpadded batch made before.
    Outputs at padding positions are zero; nothing reads them (the cache zeroes their keys and values).
    """
    b, heads, p, dim = query.shape
    gqa = key.shape[1] != heads
    if len(groups) == 1 and groups[0][0] == p:
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, enable_gqa=gqa)
        return out.transpose(1, 2).contiguous(), None
    out = query.new_zeros(b, p, heads, dim)
    for length, rows in groups:
        q, kk, v = (t[rows, :, p - length :] for t in (query, key, value))
        out[rows, p - length :] = torch.nn.functional.scaled_dot_product_attention(q, kk, v, is_causal=True, scale=scaling, enable_gqa=gqa).transpose(1, 2)
    return out, None


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale + bias) v and the log-sum-exp of each query's scores (float32).

    On the CPU this is torch's fused flash kernel, which returns the log-sum-exp and never
    materialises the score matrix; elsewhere plain matmuls (the decode step is small there).
    """
    if q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=bias, scale=scale)
    return attend_plain(q, k, v, bias, scale)


def attend_plain(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`attend` off the CPU: the scores in float32 by plain matmuls, then their softmax and log-sum-exp."""
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
    if bias is not None:
        scores = scores + bias
    return torch.matmul(torch.softmax(scores, dim=-1).to(v.dtype), v), torch.logsumexp(scores, dim=-1)


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Attention for a decoding step over a SharedPrefixCache, or for the prefill (given the prompts' lengths: prefill_attention);
    anything else goes to plain SDPA.

    query (B*k, H, q, D); key/value: the generated part only, (B*k, Hkv, t, D), t >= q.
    The two parts are attended separately and merged by their log-sum-exps (as flash-decoding
    merges splits). Returns (B*k, q, H, D) like every transformers attention function.
    """
    cache = kwargs.get(KWARG)
    if not isinstance(cache, SharedPrefixCache):
        groups = kwargs.get(LENGTHS)
        if groups is not None and query.shape[2] > 1:  # the prefill
            return prefill_attention(query, key, value, groups, scaling)
        return sdpa_gqa_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    layer = cache.layers[module.layer_idx]
    bk, heads, q, dim = query.shape
    k, kv_heads, t = cache.k, key.shape[1], key.shape[2]
    b, rows = bk // k, heads // kv_heads * q  # rows: the query vectors of one sample that share a KV head
    scale = dim**-0.5 if scaling is None else scaling
    # Prompt part: the k samples' queries for a KV head become one block of k * rows queries.
    qp = query.reshape(b, k, kv_heads, rows, dim).transpose(1, 2).reshape(b, kv_heads, k * rows, dim)
    out_p, lse_p = attend(qp, layer.prompt_keys, layer.prompt_values, cache.prompt_bias, scale)
    out_p = out_p.reshape(b, kv_heads, k, rows, dim).transpose(1, 2).reshape(bk, kv_heads, rows, dim)
    lse_p = lse_p.reshape(b, kv_heads, k, rows).transpose(1, 2).reshape(bk, kv_heads, rows)
    # Generated part: per sample, causal within the q new tokens.
    bias = None
    if q > 1:
        future = torch.ones(q, t, dtype=torch.bool, device=query.device).triu(t - q + 1)
        bias = torch.zeros(q, t, dtype=query.dtype, device=query.device).masked_fill(future, float("-inf"))
        bias = bias.repeat(heads // kv_heads, 1)
    out_g, lse_g = attend(query.reshape(bk, kv_heads, rows, dim), key, value, bias, scale)
    lse = torch.logaddexp(lse_p, lse_g)
    out = out_p * torch.exp(lse_p - lse)[..., None].to(out_p.dtype) + out_g * torch.exp(lse_g - lse)[..., None].to(out_g.dtype)
    return out.reshape(bk, heads, q, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, shared_prefix_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_shared_prefix_attention(model: torch.nn.Module) -> None:
    """Switch a model on SDPA (or on s2d_sdpa_gqa) to shared-prefix decoding; others are left alone."""
    if getattr(model.config, "_attn_implementation", None) in ("sdpa", SDPA_GQA):
        model.set_attn_implementation(NAME)


@contextlib.contextmanager
def sharing_prompts(model: torch.nn.Module) -> Iterator[None]:
    """Shared-prefix decoding inside the block, the model's own attention after it.

    The sampler runs in this block, so a trained model's forward and backward passes between
    rollouts keep their attention kernel (the switch itself costs a walk over the modules).
    """
    before = getattr(model.config, "_attn_implementation", None)
    use_shared_prefix_attention(model)
    try:
        yield
    finally:
        if before is not None and getattr(model.config, "_attn_implementation", None) != before:
            model.set_attn_implementation(before)


def supports_shared_prefix(model: torch.nn.Module) -> bool:
    return getattr(model.config, "_attn_implementation", None) == NAME
