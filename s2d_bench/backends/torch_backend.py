"""Plain-PyTorch backend: the four stages as short loops over `s2d_bench.losses`.

One process, one device (CPU or a single GPU), AdamW at a constant learning rate. Stages 1 and 3
share the GRPO loop; stages 2a and 2b share the distillation loop and differ only in who samples
(teacher vs student) and which divergence is minimised.
"""

from __future__ import annotations

import copy
import random
from typing import Callable

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench import losses
from s2d_bench.backends.base import DistillJob, RLJob, Rollouts, StageReport
from s2d_bench.harness.sampling import Sampling, sample
from s2d_bench.models.sequences import Batch, completion_logits, encode_prompts, join, left_pad, token_logprobs


def _optimizer(model: PreTrainedModel, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)


def _step(model: PreTrainedModel, opt: torch.optim.Optimizer, loss: torch.Tensor, max_norm: float) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    return float(norm)


def _lengths(batch: Batch) -> float:
    return float(batch.completion_mask.sum(1).mean())


class TorchBackend:
    name = "torch"

    def validate(self, cfg) -> None:  # noqa: ANN001 - every option of ours is native here
        return None

    def generate(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: list[str], sampling: Sampling, seed: int) -> Rollouts:
        rows = encode_prompts(tok, prompts)
        ids, mask = left_pad(rows, tok.pad_token_id)
        device = model.device
        generator = torch.Generator(device=device).manual_seed(seed)
        completion, cmask = sample(model, ids.to(device), mask.to(device), sampling, tok.eos_token_id, tok.pad_token_id, generator)
        batch = join([r for r in rows for _ in range(sampling.k)], completion, cmask, tok.pad_token_id)
        texts = tok.batch_decode(completion.cpu(), skip_special_tokens=True)
        return Rollouts(texts=texts, batch=batch, k=sampling.k)

    # ------------------------------------------------------------------ stages 1 and 3
    def teacher_rl(self, job: RLJob) -> StageReport:
        return self._grpo(job)

    def student_rl(self, job: RLJob) -> StageReport:
        return self._grpo(job)

    def _grpo(self, job: RLJob) -> StageReport:
        """Sample k per labeled prompt, reward 0/1 by the grader, clipped policy gradient."""
        cfg, model = job.cfg, job.policy
        rng = random.Random(job.seed)
        opt = _optimizer(model, cfg.lr)
        ref = copy.deepcopy(model).eval() if cfg.kl_coef > 0 else None
        sampling = Sampling(k=cfg.samples_per_prompt, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
        draws: list[str] = []
        bar = tqdm(range(cfg.steps), desc=job.name, unit="step", dynamic_ncols=True)
        for step in bar:
            problems = rng.sample(job.problems, min(cfg.prompts_per_step, len(job.problems)))
            draws.extend(p.id for p in problems)
            roll = self.generate(model, job.tok, [p.prompt for p in problems], sampling, rng.randrange(2**31))
            rewards = torch.tensor([float(job.grade(t, problems[i // roll.k])) for i, t in enumerate(roll.texts)])
            advantages = losses.grpo_advantages(rewards.view(len(problems), roll.k), cfg.scale_rewards).flatten()
            metrics = self._policy_updates(model, opt, ref, roll.batch.to(model.device), advantages.to(model.device), cfg)
            metrics.update(step=step, reward=float(rewards.mean()), response_length=_lengths(roll.batch))
            job.log(metrics)
            bar.set_postfix(reward=f"{metrics['reward']:.3f}")
        return StageReport(steps=cfg.steps, labeled_draws=draws)

    @staticmethod
    def _policy_updates(model, opt, ref, batch: Batch, advantages: torch.Tensor, cfg) -> dict:
        mask, ids = batch.completion_mask, batch.completion_ids
        old_logp = ref_logp = None
        with torch.no_grad():
            if cfg.updates_per_batch > 1:
                old_logp = token_logprobs(completion_logits(model, batch), ids)
            if ref is not None:
                ref_logp = token_logprobs(completion_logits(ref, batch), ids)
        for _ in range(cfg.updates_per_batch):
            logits = completion_logits(model, batch)
            logp = token_logprobs(logits, ids)
            loss, stats = losses.policy_loss(
                logp, logp.detach() if old_logp is None else old_logp, advantages, mask,
                cfg.clip_low, cfg.clip_high, ref_logp, cfg.kl_coef,
            )
            grad_norm = _step(model, opt, loss, cfg.max_grad_norm)
        with torch.no_grad():
            stats.update(loss=loss.item(), grad_norm=grad_norm, entropy=float(losses.entropy(logits, mask)))
        return stats

    # ------------------------------------------------------------------ stages 2a and 2b
    def warmup(self, job: DistillJob) -> StageReport:
        return self._distill(job, sampler=job.teacher, objective=lambda s, t, b: losses.forward_kl(s, t, b.completion_mask))

    def opd(self, job: DistillJob) -> StageReport:
        if job.cfg.estimator == "sampled":
            def objective(s: torch.Tensor, t: torch.Tensor, b: Batch) -> torch.Tensor:
                ids = b.completion_ids
                return losses.sampled_reverse_kl(token_logprobs(s, ids), token_logprobs(t, ids), b.completion_mask)
        else:
            def objective(s: torch.Tensor, t: torch.Tensor, b: Batch) -> torch.Tensor:
                return losses.reverse_kl(s, t, b.completion_mask)
        return self._distill(job, sampler=job.student, objective=objective)

    def _distill(self, job: DistillJob, sampler: PreTrainedModel, objective: Callable) -> StageReport:
        """Sample one completion per prompt from `sampler`; the student minimises `objective`."""
        cfg, student, teacher = job.cfg, job.student, job.teacher
        rng = random.Random(job.seed)
        opt = _optimizer(student, cfg.lr)
        teacher.eval()
        sampling = Sampling(k=1, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
        bar = tqdm(range(cfg.steps), desc=job.name, unit="step", dynamic_ncols=True)
        for step in bar:
            prompts = rng.sample(job.prompts, min(cfg.batch_size, len(job.prompts)))
            batch = self.generate(sampler, job.tok, prompts, sampling, rng.randrange(2**31)).batch.to(student.device)
            with torch.no_grad():
                t_logits = completion_logits(teacher, batch)
            s_logits = completion_logits(student, batch)
            loss = objective(s_logits, t_logits, batch)
            grad_norm = _step(student, opt, loss, cfg.max_grad_norm)
            with torch.no_grad():
                mask = batch.completion_mask
                metrics = {
                    "step": step,
                    "loss": loss.item(),
                    "grad_norm": grad_norm,
                    "kl_forward": float(losses.forward_kl(s_logits, t_logits, mask)),
                    "kl_reverse": float(losses.reverse_kl(s_logits, t_logits, mask)),
                    "entropy": float(losses.entropy(s_logits, mask)),
                    "response_length": _lengths(batch),
                }
            job.log(metrics)
            bar.set_postfix(kl=f"{metrics['kl_reverse']:.3f}")
        return StageReport(steps=cfg.steps)
