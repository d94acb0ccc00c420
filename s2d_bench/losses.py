"""The workflow's objectives, once, as pure tensor functions.

Every backend calls these, so backends cannot drift apart. Shapes: N sequences, T completion
positions, V vocabulary, G groups of k samples (N = G * k). `mask` is (N, T), 1.0 on completion
tokens (EOS included) and 0.0 on padding. "Token mean" divides by the number of real tokens in
the batch (DAPO's aggregation), so long completions are not down-weighted per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s2d_bench.estimators import DIRECTIONS


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token mean of (N, T) values over the mask; 0 for an empty mask."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def grpo_advantages(rewards: torch.Tensor, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Group-normalised advantages: (G, k) rewards -> (G, k).

    A_i = (r_i - mean(r)) / (std(r) + eps) within each group; `scale=False` drops the division
    (Dr. GRPO). std is the unbiased sample std, as in TRL. A group whose samples all score the
    same gets advantage 0: it carries no signal.
    """
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + eps)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped-ratio GRPO loss, token mean.

    logp, old_logp, ref_logp, mask: (N, T); advantages: (N,), one per sequence.
    per token: -min(rho * A, clip(rho, 1 - clip_low, 1 + clip_high) * A), rho = exp(logp - old_logp);
    plus kl_coef * k3(ref || policy) = exp(ref - logp) - (ref - logp) - 1 when a reference is given.
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    stats = {"clip_frac": masked_mean((clipped < unclipped).float(), mask).item()}
    if ref_logp is not None and kl_coef > 0:
        log_ratio = ref_logp - logp
        k3 = torch.exp(log_ratio) - log_ratio - 1.0
        per_token = per_token + kl_coef * k3
        stats["kl_ref"] = masked_mean(k3, mask).item()
    return masked_mean(per_token, mask), stats


def shared_vocabulary(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both models' logits over the vocabulary they share, the first min(V_S, V_T) entries.

    A pair on one tokenizer may pad its embedding differently (Qwen3-1.7B to 151,936 rows, Qwen2.5-7B to
    152,064: the mismatch of huggingface/trl#2215). Rows past the smaller size are padding that no token maps
    to, so every divergence is taken over the shared rows, each distribution renormalised over them."""
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
    return student_logits[..., :vocab], teacher_logits[..., :vocab]


def _shared_logp(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both models' float32 log-probabilities over the shared vocabulary."""
    student_logits, teacher_logits = shared_vocabulary(student_logits, teacher_logits)
    return F.log_softmax(student_logits.float(), dim=-1), F.log_softmax(teacher_logits.float(), dim=-1)




def token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, direction: str) -> torch.Tensor:
    """Per-token KL over the shared vocabulary (`shared_vocabulary`): (..., V) logits -> (...).

    'forward' is KL(teacher || student) = sum_v p_T (log p_T - log p_S): mass-covering, it pulls
    the student onto every token the teacher would say (the warmup on teacher rollouts).
    'reverse' is KL(student || teacher): mode-seeking; on the student's own samples it is the
    dense per-token signal of on-policy distillation.
    """
    return kl_from_logp(*_shared_logp(student_logits, teacher_logits), direction)


def kl_from_logp(s_logp: torch.Tensor, t_logp: torch.Tensor, direction: str) -> torch.Tensor:
    """`token_kl` from normalised log-probabilities (callers that already hold them)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"KL direction '{direction}': use 'forward' (teacher || student) or 'reverse' (student || teacher)")
    p, a, b = (t_logp.exp(), t_logp, s_logp) if direction == "forward" else (s_logp.exp(), s_logp, t_logp)
    return (p * (a - b)).sum(-1)


def token_kl_topk(student_logits: torch.Tensor, teacher_logits: torch.Tensor, direction: str, k: int) -> torch.Tensor:
    """Per-token KL over the teacher's top-k tokens plus one tail bucket: (..., V) -> (...).

    Only k teacher log-probs per position need to be kept (or sent from a teacher server), not V.
    Both distributions are coarsened to the same k + 1 outcomes (the k tokens, "anything else"),
    so the value is a lower bound of the full KL that reaches it as k -> V.
    """
    return topk_kl_from_logp(*_shared_logp(student_logits, teacher_logits), direction, k)


def topk_kl_from_logp(s_logp: torch.Tensor, t_logp: torch.Tensor, direction: str, k: int) -> torch.Tensor:
    """`token_kl_topk` from normalised log-probabilities."""
    t_top, ids = t_logp.topk(min(k, t_logp.shape[-1]), dim=-1)
    return topk_kl_given(s_logp, t_top, ids, _log_tail(t_logp, ids), direction)


def topk_kl_given(s_logp: torch.Tensor, t_top: torch.Tensor, ids: torch.Tensor, t_tail: torch.Tensor, direction: str) -> torch.Tensor:
    """The top-k + tail KL when only the teacher's top k are known: its log-probs `t_top` (..., k) of the tokens `ids`
    (..., k) and the log of the mass outside them `t_tail` (..., 1); the student's (..., V) log-probabilities.
    k covering the vocabulary leaves no tail: the full KL."""
    s_top = s_logp.gather(-1, ids)
    if ids.shape[-1] >= s_logp.shape[-1]:
        return kl_from_logp(s_top, t_top, direction)
    t_all = torch.cat([t_top, t_tail], dim=-1)
    s_all = torch.cat([s_top, _log_tail(s_logp, ids)], dim=-1)
    return kl_from_logp(s_all, t_all, direction)


TAIL_FLOOR = 1e-6  # least tail mass `log_tail_from_top` gives: float32 sums of top-k probabilities reach 1 +- a few 1e-7


def log_tail_from_top(t_top: torch.Tensor) -> torch.Tensor:
    """log(1 - sum of the top-k probabilities), (..., 1), for a teacher known only by its top k (a served one).

    `_log_tail` cannot be used (the rest of the vocabulary is not known), and the sum of k rounded probabilities may
    reach 1; the tail is floored at TAIL_FLOOR, so a KL term never meets log 0. A bias of at most about 1e-6 nats. The sum
    is taken in float64: a float32 sum of k probabilities near 1 would leave a small tail only a few digits."""
    mass = t_top.double().exp().sum(-1, keepdim=True)
    return torch.log1p(-mass.clamp(max=1.0 - TAIL_FLOOR)).to(t_top.dtype)


def _log_tail(logp: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
    """log of the mass outside `top_ids`: a log-sum-exp over the complement, (..., 1).

    Exact however small the tail is; `log(1 - sum of the top probabilities)` cancels
    catastrophically once the top tokens hold nearly all the mass (float32: below about 1e-7).
    """
    return logp.scatter(-1, top_ids, float("-inf")).logsumexp(dim=-1, keepdim=True)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over the full vocabulary, token mean. Logits (N, T, V)."""
    return masked_mean(token_kl(student_logits, teacher_logits, "forward"), mask)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(student || teacher) over the full vocabulary, token mean. Logits (N, T, V)."""
    return masked_mean(token_kl(student_logits, teacher_logits, "reverse"), mask)


def sampled_reverse_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sampled-token reverse-KL estimator: (N, T) log-probs of the sampled tokens -> scalar.

    The per-token advantage is log p_T(y_t) - log p_S(y_t) (no gradient), applied as a policy
    gradient: loss = -mean(A_t * log p_S(y_t)). Its expectation under student sampling is the
    gradient of the sequence-level reverse KL with the future terms dropped (one-step credit).
    """
    return masked_mean(sampled_reverse_kl_per_token(student_logp, teacher_logp), mask)


def sampled_reverse_kl_per_token(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """`sampled_reverse_kl` before the token mean: (...) log-probs of the sampled tokens -> (...)."""
    advantage = (teacher_logp - student_logp).detach()
    return -advantage * student_logp


def sampled_token_reverse_kl(s_logp: torch.Tensor, t_logp: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`sampled_reverse_kl_per_token` from (m, V) normalised log-probabilities and the (m,) sampled tokens."""
    s_lp, t_lp = s_logp.gather(-1, tokens[:, None]).squeeze(-1), t_logp.gather(-1, tokens[:, None]).squeeze(-1)
    return sampled_reverse_kl_per_token(s_lp, t_lp)


# estimator name -> per-token objective from a teacher known only by its sampled-token and top-k log-probs (a served
# teacher): (s_logp (m, V), sampled tokens (m,), t_token (m,), t_ids (m, k), t_top (m, k), direction) -> (m,).
# 'full' has no entry: it needs the whole vocabulary (`estimators.Estimator.served`).
ESTIMATE_SERVED = {
    "topk": lambda s_logp, tokens, t_token, t_ids, t_top, direction: topk_kl_given(s_logp, t_top, t_ids, log_tail_from_top(t_top), direction),
    "sampled": lambda s_logp, tokens, t_token, t_ids, t_top, direction: sampled_reverse_kl_per_token(
        s_logp.gather(-1, tokens[:, None]).squeeze(-1), t_token),
}

# estimator name (`estimators.ESTIMATORS`) -> per-token objective (s_logp, t_logp, sampled tokens, direction, top_k) -> (m,)
ESTIMATE = {
    "full": lambda s_logp, t_logp, tokens, direction, top_k: kl_from_logp(s_logp, t_logp, direction),
    "topk": lambda s_logp, t_logp, tokens, direction, top_k: topk_kl_from_logp(s_logp, t_logp, direction, top_k),
    "sampled": lambda s_logp, t_logp, tokens, direction, top_k: sampled_token_reverse_kl(s_logp, t_logp, tokens),
}


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the distribution behind (..., V) logits: (...)."""
    return entropy_from_logp(F.log_softmax(logits.float(), dim=-1))


def entropy_from_logp(logp: torch.Tensor) -> torch.Tensor:
    """`token_entropy` from normalised log-probabilities (callers that already hold them)."""
    return -(logp.exp() * logp).sum(-1)


def entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token entropy of the distribution behind (N, T, V) logits, token mean."""
    return masked_mean(token_entropy(logits), mask)


def token_nll(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Teacher-forced cross entropy, token mean: logits (N, T, V), tokens (N, T) -> scalar."""
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return masked_mean(-logp, mask)
