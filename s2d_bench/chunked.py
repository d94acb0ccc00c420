"""Distillation losses from hidden states, a chunk of positions at a time.

Full-vocabulary logits cost V * 4 bytes a position per model: with Qwen3's 151,936 tokens that is
0.6 MB a position, 5 GB for one 8k-token sequence, and log-softmax plus its gradient multiply it.
Here the language-model head runs inside the loss on `chunk` completion positions at a time, and
each chunk's logits are recomputed in backward (activation checkpointing) instead of kept, so peak
memory is O(chunk x V) whatever the batch's length. The per-token maths is `s2d_bench.losses`;
this module only decides how much of it exists at once. chunk = 0 computes everything in one go
(the reference the test compares against).

Every log-probability is taken at the stage's sampling `temperature` (logits / T, as TRL does):
rollouts are drawn from softmax(logits / T), so a policy gradient or a sampled-token KL computed
at T = 1 on them would be biased whenever T != 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from s2d_bench import losses

STATS = ("kl_forward", "kl_reverse", "entropy")


@dataclass(frozen=True)
class Objective:
    """What the student minimises per completion token.

    direction: 'forward' (KL(T||S), the warmup) or 'reverse' (KL(S||T), on-policy distillation).
    estimator: a name in `estimators.ESTIMATORS` ('full', 'topk', 'sampled'), implemented by `losses.ESTIMATE`.
    """

    direction: str
    estimator: str = "full"
    top_k: int = 0

    def per_token(self, s_logp: torch.Tensor, t_logp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(m,) objective from (m, V) normalised log-probabilities and the (m,) sampled tokens."""
        return losses.ESTIMATE[self.estimator](s_logp, t_logp, tokens, self.direction, self.top_k)


def _log_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.log_softmax(logits.float() / temperature, dim=-1)


def _chunk(s_hidden, t_hidden, tokens, s_head, t_head, objective: Objective, temperature: float) -> torch.Tensor:
    """(m, 4): the objective (with gradient) and the three monitored statistics, per position.

    One log-softmax per model per chunk, over the pair's shared vocabulary (`losses.shared_vocabulary`: the two
    heads may be padded to different sizes), serves the objective and all three statistics."""
    s_logits = s_head(s_hidden)
    with torch.no_grad():
        t_logits = t_head(t_hidden)
    s_logits, t_logits = losses.shared_vocabulary(s_logits, t_logits)
    s_logp = _log_softmax(s_logits, temperature)
    with torch.no_grad():
        t_logp = _log_softmax(t_logits, temperature)
        s_fixed = s_logp.detach()
        stats = [losses.kl_from_logp(s_fixed, t_logp, "forward"), losses.kl_from_logp(s_fixed, t_logp, "reverse"),
                 losses.entropy_from_logp(s_fixed)]
    return torch.stack([objective.per_token(s_logp, t_logp, tokens), *stats], dim=-1)


def n_chunks(mask: torch.Tensor, chunk: int) -> int:
    """How many head calls `distill_loss` or `token_logprobs` makes for this mask."""
    return max(1, -(-int(mask.sum()) // chunk)) if chunk > 0 else 1


def distill_loss(
    s_hidden: torch.Tensor,
    s_head: torch.nn.Module,
    t_hidden: torch.Tensor,
    t_head: torch.nn.Module,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    objective: Objective,
    chunk: int = 0,
    min_chunks: int = 1,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-mean objective over the completion tokens and the mean of each statistic, both
    distributions at `temperature`.

    s_hidden, t_hidden: (N, T, H_s), (N, T, H_t) final hidden states that predict completion
    tokens (N, T); mask (N, T). The heads map hidden states to (.., V) logits; calling them as
    modules keeps ZeRO-3's parameter gathering working. Padding positions are dropped first.
    Under ZeRO-3 every head call is a collective, so all ranks must make as many: `min_chunks`
    pads this rank's chunk count (empty chunks) up to the most any rank needs (`n_chunks`).
    """
    keep = mask.bool()
    values = _over_chunks(_chunk, (s_hidden[keep], t_hidden[keep].detach(), tokens[keep]), (s_head, t_head, objective, temperature), chunk, min_chunks)
    return _token_means(values, STATS)


def _token_means(values: torch.Tensor, names: tuple[str, ...]) -> tuple[torch.Tensor, dict[str, float]]:
    """(M, 1 + len(names)) per-position values -> the objective's token mean (with gradient) and each statistic's."""
    count = max(len(values), 1)
    return values[:, 0].sum() / count, dict(zip(names, (values[:, 1:].detach().sum(0) / count).tolist()))


SERVED_STATS = ("kl_forward_topk", "kl_reverse_topk", "kl_sampled", "entropy")


def _served_chunk(s_hidden, tokens, t_token, t_ids, t_top, s_head, objective: Objective, temperature: float) -> torch.Tensor:
    """(m, 5): the objective against a served teacher (its sampled-token and top-k log-probs) and four statistics: both
    KLs over the top k + tail (lower bounds of the exact ones), the sampled token's log-ratio (log p_S - log p_T on the
    student's samples, log p_T - log p_S on the teacher's: each direction's single-sample estimate, exact in
    expectation) and the student's entropy."""
    s_logp = _log_softmax(s_head(s_hidden), temperature)
    value = losses.ESTIMATE_SERVED[objective.estimator](s_logp, tokens, t_token, t_ids, t_top, objective.direction)
    with torch.no_grad():
        s_fixed = s_logp.detach()
        tail = losses.log_tail_from_top(t_top)
        ratio = s_fixed.gather(-1, tokens[:, None]).squeeze(-1) - t_token
        stats = [losses.topk_kl_given(s_fixed, t_top, t_ids, tail, "forward"), losses.topk_kl_given(s_fixed, t_top, t_ids, tail, "reverse"),
                 ratio if objective.direction == "reverse" else -ratio, losses.entropy_from_logp(s_fixed)]
    return torch.stack([value, *stats], dim=-1)


def served_distill_loss(s_hidden: torch.Tensor, s_head: torch.nn.Module, teacher, tokens: torch.Tensor,  # noqa: ANN001
                        mask: torch.Tensor, objective: Objective, chunk: int = 0, min_chunks: int = 1, temperature: float = 1.0
                        ) -> tuple[torch.Tensor, dict[str, float]]:
    """`distill_loss` against a served teacher: `teacher` (served.teacher.TeacherLogprobs of these rows) holds its log-prob
    of each completion token (N, T) and its top k (N, T, k) instead of hidden states and a head. Same chunking, same
    token mean."""
    keep = mask.bool()
    rows = (s_hidden[keep], tokens[keep], teacher.token[keep].float(), teacher.ids[keep], teacher.logp[keep].float())
    return _token_means(_over_chunks(_served_chunk, rows, (s_head, objective, temperature), chunk, min_chunks), SERVED_STATS)


def _over_chunks(fn, rows: tuple[torch.Tensor, ...], fixed: tuple, chunk: int, min_chunks: int) -> torch.Tensor:
    """fn(*row_slices, *fixed) on `chunk` rows at a time (checkpointed), padded to `min_chunks` calls; (M, width).
    There is always at least one call, empty when there are no rows, so fn gives the (0, width) result itself."""
    m = len(rows[0])
    size = chunk if chunk > 0 else max(m, 1)
    out = []
    for start in range(0, max(m, size * min_chunks), size):
        part = (*(r[start : start + size] for r in rows), *fixed)
        out.append(checkpoint(fn, *part, use_reentrant=False) if chunk > 0 else fn(*part))
    return torch.cat(out)


def _logp_chunk(hidden, tokens, head, temperature: float) -> torch.Tensor:
    """(m, 2): log p(token) (with gradient) and the entropy of the distribution, per position."""
    logp = _log_softmax(head(hidden), temperature)
    with torch.no_grad():
        entropy = losses.entropy_from_logp(logp)
    return torch.stack([logp.gather(-1, tokens[:, None]).squeeze(-1), entropy], dim=-1)


def token_logprobs(
    hidden: torch.Tensor, head: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor, chunk: int = 0, min_chunks: int = 1,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO's inputs without (N, T, V) logits: log p(token) (N, T), with gradient, and entropy (N, T),
    at the sampling `temperature`.

    hidden (N, T, H) predicts tokens (N, T); positions outside the mask get 0 (the losses mask them).
    """
    keep = mask.bool()
    values = _over_chunks(_logp_chunk, (hidden[keep], tokens[keep]), (head, temperature), chunk, min_chunks)
    zeros = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    return zeros.masked_scatter(keep, values[:, 0]), zeros.masked_scatter(keep, values[:, 1].detach())
