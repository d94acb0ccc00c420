"""Plain-PyTorch backend: the four stages as short loops over `s2d_bench.losses`.

Stages 1 and 3 share the GRPO loop; stages 2a and 2b share the distillation loop and differ only
in who samples (teacher vs student) and which divergence is minimised. The loops run on a
`Runtime` (runtime.py): by default one process and AdamW at a constant learning rate; the
DeepSpeed backend runs these same loops on its engine, each rank on its share of every batch.
They sample through a generation engine (`s2d_bench.generation`, config `rollout.engine`): the
built-in sampler on the live model, or vLLM with weights pushed from the trainer. Every prompt of
a step gets its own sampling seed (`prompt_seeds`), so a prompt's samples are the same whichever
rank draws them.
"""

from __future__ import annotations

import contextlib
import random

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench import chunked, losses
from s2d_bench.backends.base import DistillJob, RLJob, StageReport
from s2d_bench.backends.batching import micro_batches, mini_batch_rows, shard, token_shares
from s2d_bench.backends.runtime import LocalRuntime, Runtime, Trainer
from s2d_bench.backends.teacher_process import SplitTeacher, TeacherProcess
from s2d_bench.config import RunConfig
from s2d_bench.generation import ENGINES
from s2d_bench.generation.engine import open_rollouts, resolve_device
from s2d_bench.generation.protocol import draw_step, peek_draw
from s2d_bench.generation.sampling import Sampling
from s2d_bench.models.builders import load_pretrained
from s2d_bench.models.checkpointing import checkpointing
from s2d_bench.models.sequences import Batch, completion_hidden
from s2d_bench.phasemem import phase
from s2d_bench.served.teacher import ServedTeacher, TeacherLogprobs


WEIGHT = " weight"  # the key `global_means` sends each rank's weight under (no metric is named so)


def global_means(rt: Runtime, sums: dict[str, float], weight: float) -> dict[str, float]:
    """Means over every rank's items (tokens, sequences) from this rank's sums and item count. Ranks hold unequal
    shares of a step (completions differ in length, prompts need not divide evenly): the mean over ranks of each
    rank's own mean would weigh a short share as much as a long one. Every rank gets the same numbers."""
    both = rt.mean({**sums, WEIGHT: weight})  # (sum over ranks) / world, for the sums and the weights alike
    total = both.pop(WEIGHT)
    return {key: value / total if total > 0 else 0.0 for key, value in both.items()}


def _lengths(batch: Batch) -> dict[str, float]:
    """The sum of this rank's completion lengths, for `global_means` over sequences."""
    return {"response_length": float(batch.completion_mask.sum())}


def policy_updates(trainer: Trainer, ref, batch: Batch, advantages: torch.Tensor, cfg, rt: Runtime) -> dict:
    """cfg.updates_per_batch passes over one batch of rollouts, each in cfg.mini_batches optimizer steps
    (a mini-batch's token mean over every rank), each step's gradient accumulated over micro-batches of
    cfg.micro_batch_size sequences (activations checkpointed when cfg.gradient_checkpointing).

    Log-probabilities come from hidden states a chunk of positions at a time (`chunked`), so
    no (N, T, V) logits exist at real vocabulary sizes; they are taken at the sampling temperature.
    Ratios are against the rollout policy whenever the policy moves within a batch (several passes or mini-batches).
    A prompt's k samples are consecutive rows, so each forward takes the prompt's positions once (`share_prompts`),
    except in micro-batches of one sequence, which have nothing to share: there one forward holds less than the two
    calls (measured: 55.8 MiB against 49.2 MiB in benchmarks/memory_model.py's GRPO case at micro-batch 1). The rule reads the config,
    not the rows, so every ZeRO-3 rank makes as many module calls.
    """
    model = trainer.model
    share = cfg.micro_batch_size != 1

    def logprobs(m: PreTrainedModel, mb: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        calls = rt.most(chunked.n_chunks(mb.completion_mask, cfg.chunk_size))
        return chunked.token_logprobs(completion_hidden(m, mb, share_prompts=share), m.get_output_embeddings(), mb.completion_ids, mb.completion_mask,
                                      cfg.chunk_size, calls, cfg.temperature)

    steps = []  # per optimizer step: its micro-batches, their loss weights, advantages and fixed log-probs
    moving = cfg.updates_per_batch > 1 or cfg.mini_batches > 1
    for rows in mini_batch_rows(len(advantages), cfg.mini_batches):
        sub = batch.rows(rows)
        parts = micro_batches(rows.stop - rows.start, cfg.micro_batch_size, rt)
        micro = [sub.rows(part.rows) for part in parts]
        with torch.no_grad():
            old = [logprobs(model, mb)[0] if moving else None for mb in micro]
            fixed = [logprobs(ref, mb)[0] if ref is not None else None for mb in micro]
        steps.append((parts, token_shares(sub, parts, rt), micro, advantages[rows], old, fixed))
    for _ in range(cfg.updates_per_batch):
        totals: dict[str, float] = {}
        weights: list[float] = []
        for parts, shares, micro, adv, old, fixed in steps:
            with checkpointing(model, cfg.gradient_checkpointing):
                for i, (part, mb) in enumerate(zip(parts, micro)):
                    logp, entropy = logprobs(model, mb)
                    loss, stats = losses.policy_loss(
                        logp, logp.detach() if old[i] is None else old[i], adv[part.rows], mb.completion_mask,
                        cfg.clip_low, cfg.clip_high, fixed[i], cfg.kl_coef,
                    )
                    trainer.backward(loss * shares[i], last=i == len(parts) - 1)
                    stats.update(loss=loss.item(), entropy=float(losses.masked_mean(entropy, mb.completion_mask)))
                    _add(totals, stats, shares[i])
            weights.extend(shares)
            grad_norm = trainer.step()
    return {**global_means(rt, totals, sum(weights)), "grad_norm": grad_norm}


def distill_update(trainer: Trainer, teacher: PreTrainedModel | SplitTeacher | TeacherLogprobs, batch: Batch, objective: chunked.Objective, cfg,
                   rt: Runtime) -> dict:
    """One step of the student on `objective` against the frozen teacher (a model, or a served teacher's log-probs of this
    batch's completion tokens and their top k): logits in chunks, the gradient accumulated over micro-batches of
    cfg.micro_batch_size sequences, both at cfg.temperature."""
    student = trainer.model
    parts = micro_batches(batch.completion_ids.shape[0], cfg.micro_batch_size, rt)
    shares = token_shares(batch, parts, rt)
    totals: dict[str, float] = {}
    with checkpointing(student, cfg.gradient_checkpointing):
        for i, (part, share) in enumerate(zip(parts, shares)):
            loss, stats = _micro_loss(student, teacher, batch.rows(part.rows), part.rows, objective, cfg, rt)
            trainer.backward(loss * share, last=i == len(parts) - 1)
            _add(totals, {"loss": loss.item(), **stats}, share)
    grad_norm = trainer.step()
    return {**global_means(rt, totals, sum(shares)), "grad_norm": grad_norm, **global_means(rt, _lengths(batch), len(batch.completion_ids))}


def _micro_loss(student: PreTrainedModel, teacher: PreTrainedModel | SplitTeacher | TeacherLogprobs, mb: Batch, rows: slice, objective: chunked.Objective,
                cfg, rt: Runtime) -> tuple[torch.Tensor, dict[str, float]]:  # noqa: ANN001 - a DistillConfig
    """A micro-batch's objective: against the teacher's hidden states, or a served teacher's log-probs (its `rows`)."""
    calls = rt.most(chunked.n_chunks(mb.completion_mask, cfg.chunk_size))
    if isinstance(teacher, TeacherLogprobs):
        return chunked.served_distill_loss(completion_hidden(student, mb), student.get_output_embeddings(), teacher.rows(rows),
                                           mb.completion_ids, mb.completion_mask, objective, cfg.chunk_size, calls, cfg.temperature)
    if isinstance(teacher, SplitTeacher):  # its forward beside the student's (teacher_process.py)
        s_hidden, t_hidden = teacher.hidden(mb, lambda: completion_hidden(student, mb))
    else:
        with torch.no_grad():
            t_hidden = completion_hidden(teacher, mb)
        s_hidden = completion_hidden(student, mb)
    return chunked.distill_loss(s_hidden, student.get_output_embeddings(), t_hidden, teacher.get_output_embeddings(),
                                mb.completion_ids, mb.completion_mask, objective, cfg.chunk_size, calls, cfg.temperature)


def _add(totals: dict[str, float], stats: dict[str, float], share: float) -> None:
    for key, value in stats.items():
        totals[key] = totals.get(key, 0.0) + value * share


def _steps(name: str, start: int, steps: int, rt: Runtime) -> tqdm:
    """The stage's step bar from `start` (a continued stage's first step), on rank 0."""
    return tqdm(range(start, steps), desc=name, unit="step", initial=start, total=steps, dynamic_ncols=True, disable=rt.rank > 0)


class TorchBackend:
    name = "torch"

    def __init__(self, cfg: RunConfig, runtime: Runtime | None = None) -> None:
        ENGINES.get(cfg.rollout.engine)  # a rollout engine whose extra is missing fails now
        self.runtime = runtime or LocalRuntime()
        self.rollout, self.prompt, self.device = cfg.rollout, cfg.prompt, resolve_device(cfg.device)
        # on a CPU in one process (DeepSpeed's ranks keep theirs beside them; a GPU's kernels already run beside the host)
        self.teacher_process = cfg.teacher_process and runtime is None and self.device == "cpu"

    def load(self, ref: str, trained: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        return load_pretrained(ref, self.device)

    def saving(self, model: PreTrainedModel) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def memory_layout(self) -> dict:
        return {}  # one process, fp32 states

    def _engine(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, trained: bool):  # noqa: ANN202 - a context manager
        return open_rollouts(self.rollout, model, tok, self.prompt.thinking, trained)

    # ------------------------------------------------------------------ stages 1 and 3
    def teacher_rl(self, job: RLJob) -> StageReport:
        return self._grpo(job)

    def student_rl(self, job: RLJob) -> StageReport:
        return self._grpo(job)

    def _grpo(self, job: RLJob) -> StageReport:
        """Sample k per labeled prompt, reward 0/1 by the grader, clipped policy gradient.

        Every rank draws the same prompts and samples its share; advantages are per prompt, so
        a rank needs no other rank's rewards.
        """
        cfg, rt = job.cfg, self.runtime
        rng = random.Random(job.seed)
        with phase("reference") if cfg.kl_coef > 0 else contextlib.nullcontext():
            ref = rt.reference(job.policy) if cfg.kl_coef > 0 else None
        trainer = rt.trainer(job.policy, cfg.lr, cfg.max_grad_norm)
        model = trainer.model
        sampling = Sampling(k=cfg.samples_per_prompt, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
        start, kept = job.checkpoints.resume(trainer, rng) if job.checkpoints else (0, {})  # after the reference: the stage's start
        draws: list[str] = kept.get("draws", [])
        bar = _steps(job.name, start, cfg.steps, rt)
        with self._engine(model, job.tok, trained=True) as engine:
            for step in bar:
                problems, seeds = draw_step(rng, job.problems, cfg.prompts_per_step)
                draws.extend(p.id for p in problems)
                mine, my_seeds = shard(problems, rt.rank, rt.world), shard(seeds, rt.rank, rt.world)
                with rt.full_weights(model), phase("rollout"):
                    roll = engine.rollouts([p.prompt for p in mine], sampling, my_seeds)
                scores = job.reward(roll.texts, [mine[i // roll.k] for i in range(len(roll.texts))])
                rewards = torch.tensor(scores.rewards)
                advantages = losses.grpo_advantages(rewards.view(len(mine), roll.k), cfg.scale_rewards).flatten()
                with phase("update"):
                    metrics = policy_updates(trainer, ref, roll.batch.to(model.device), advantages.to(model.device), cfg, rt)
                per_sequence = global_means(rt, {"reward": float(rewards.sum()), **_lengths(roll.batch)}, len(rewards))
                timeouts = rt.mean({"grading_timeouts": float(scores.timeouts)})["grading_timeouts"] * rt.world  # a count, all ranks
                metrics = {**metrics, **per_sequence, "grading_timeouts": timeouts}  # the rest is global already (global_means)
                job.log({"step": step, **metrics})
                bar.set_postfix(reward=f"{metrics['reward']:.3f}")
                if job.checkpoints:
                    job.checkpoints.step_done(step + 1, cfg.steps, trainer, rt, rng, {"draws": draws})
        trainer.finish()
        return StageReport(steps=cfg.steps, labeled_draws=draws)

    # ------------------------------------------------------------------ stages 2a and 2b
    def warmup(self, job: DistillJob) -> StageReport:
        return self._distill(job, teacher_samples=True, objective=chunked.Objective("forward", job.cfg.estimator, job.cfg.top_k))

    def opd(self, job: DistillJob) -> StageReport:
        return self._distill(job, teacher_samples=False, objective=chunked.Objective("reverse", job.cfg.estimator, job.cfg.top_k))

    def _distill(self, job: DistillJob, teacher_samples: bool, objective: chunked.Objective) -> StageReport:
        """Sample one completion per prompt (teacher or student); the student minimises `objective`.

        A served teacher (served/) samples the warmup's rollouts with their top-k log-probs (from the teacher cache when
        drawn before) and scores the student's samples in on-policy distillation; it is never resident here. With
        `teacher_process` a local teacher's warmup rollouts are sampled a step ahead in a process of its own once it is
        ready, and in on-policy distillation at one thread that process takes shares of the student's sampling and of the
        teacher's forward (teacher_process.py): the same numbers."""
        cfg, rt = job.cfg, self.runtime
        rng = random.Random(job.seed)
        served = job.teacher if isinstance(job.teacher, ServedTeacher) else None
        teacher = rt.frozen(job.teacher) if served is None else None
        trainer = rt.trainer(job.student, cfg.lr, cfg.max_grad_norm)
        # on-policy, the process shares the student's samples and the teacher's forward only where that leaves the trainer the
        # stage's threads (one): a lone node's two threads in the trainer were no slower than one each (the embedded
        # default's OPD: 0.37 of its base teacher's pretraining time in 3 runs, 0.39 split), and a thread count moves the bits
        helps = teacher_samples or torch.get_num_threads() == 1
        helper = (TeacherProcess(teacher, job.tok, self.rollout, self.prompt.thinking, None if teacher_samples else trainer.model)
                  if self.teacher_process and teacher is not None and helps else None)
        sampling_helper = helper if teacher_samples else None  # the warmup's rollouts; on-policy, the teacher's forward
        split = SplitTeacher(teacher, helper) if helper is not None and not teacher_samples else None
        sampler = teacher if teacher_samples else trainer.model  # None: the served teacher samples
        sampling = Sampling(k=1, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
        start, _ = job.checkpoints.resume(trainer, rng) if job.checkpoints else (0, {})
        bar = _steps(job.name, start, cfg.steps, rt)
        opened = self._engine(sampler, job.tok, trained=not teacher_samples) if sampler is not None else contextlib.nullcontext()
        with opened as engine, helper or contextlib.nullcontext():
            for step in bar:
                prompts, seeds = draw_step(rng, job.prompts, cfg.batch_size)
                mine, my_seeds = shard(prompts, rt.rank, rt.world), shard(seeds, rt.rank, rt.world)
                with phase("rollout"):
                    roll = None
                    if sampling_helper is not None and sampling_helper.ready():  # the next step's asked now, sampled while this one trains
                        upcoming = peek_draw(rng, job.prompts, cfg.batch_size) if step + 1 < cfg.steps else None
                        roll = sampling_helper.rollouts(mine, my_seeds, sampling, upcoming)  # None: not asked, sampled here
                    if roll is None and engine is None:
                        roll, view = served.rollouts(mine, sampling, my_seeds, cfg.top_k, job.teacher_cache)
                    elif roll is None:
                        with rt.full_weights(sampler):
                            roll = (split.rollouts(engine, sampler, mine, sampling, my_seeds) if split is not None
                                    else engine.rollouts(mine, sampling, my_seeds))
                        view = served.score(roll.batch, cfg.top_k) if served is not None else None
                    batch = roll.batch.to(trainer.model.device)
                with phase("update"):
                    against = (split or teacher) if served is None else view.to(batch.completion_ids.device)
                    metrics = distill_update(trainer, against, batch, objective, cfg, rt)  # global means already
                job.log({"step": step, **metrics})
                kl = metrics["kl_reverse"] if "kl_reverse" in metrics else metrics["kl_reverse_topk"]  # served: its top-k estimate
                bar.set_postfix(kl=f"{kl:.3f}")
                if job.checkpoints:
                    job.checkpoints.step_done(step + 1, cfg.steps, trainer, rt, rng, {})
        trainer.finish()
        return StageReport(steps=cfg.steps)
