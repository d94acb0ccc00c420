"""TRL backend (extra `trl`): the four stages on the trainers the field already trusts.

  stages 1 and 3  trl.GRPOTrainer, our grader as the reward function
  stage 2a        trl.experimental.gkd.GKDTrainer with lmbda=0 (never on-policy) and beta=0
                  (forward KL(teacher || student)) on teacher rollouts generated once per stage
                  and cached as JSON Lines beside the stage's model
  stage 2b        trl.DistillationTrainer with beta=1: on-policy reverse KL(student || teacher)

Our configs are translated into TRL's in `trl_args` and nowhere else; our config classes never
inherit TRL's. Options TRL cannot express are refused by `validate` before any stage runs.
Rollouts for diagnostics go through the plain-PyTorch sampler, so C2 is measured identically on
every backend. `rollout.engine: vllm` turns on TRL's own colocated vLLM in stages 1, 2b and 3,
and our vLLM engine for the warmup's teacher rollouts.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import trl  # noqa: E402  - a missing extra surfaces as the registry's pip hint
from datasets import Dataset  # noqa: E402
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback  # noqa: E402
from transformers.trainer_callback import ProgressCallback  # noqa: E402

from s2d_bench.backends.base import DistillJob, Logger, RLJob, Rollouts, StageReport  # noqa: E402
from s2d_bench.backends.rollouts import open_rollouts  # noqa: E402
from s2d_bench.backends.torch_backend import TorchBackend  # noqa: E402
from s2d_bench.config import DistillConfig, GRPOConfig, RolloutConfig, RunConfig  # noqa: E402
from s2d_bench.errors import UserError  # noqa: E402
from s2d_bench.harness.sampling import Sampling  # noqa: E402

# TRL log keys -> ours, so metrics.jsonl reads the same on every backend
METRIC_NAMES = {"reward": "reward", "loss": "loss", "grad_norm": "grad_norm", "entropy": "entropy", "kl": "kl",
                "completions/mean_length": "response_length", "learning_rate": "lr"}


def refuse_unexpressible(cfg: RunConfig) -> None:
    """Refuse, before anything runs, the options of ours that TRL cannot express."""
    for arm in cfg.arms:
        for stage in cfg.arms[arm].stages:
            stage_cfg = cfg.stage_config(arm, stage)
            if isinstance(stage_cfg, DistillConfig) and stage_cfg.estimator != "full":
                raise UserError(f"backend=trl: {stage}.estimator={stage_cfg.estimator} has no TRL equivalent "
                                "(its trainers use the full-vocabulary divergence): set estimator: full, or use backend=torch")


def vllm_args(rollout: RolloutConfig) -> dict[str, Any]:
    """TRL's colocated vLLM (GRPO and Distillation trainers) for `rollout.engine: vllm`."""
    if rollout.engine != "vllm":
        return {}
    return dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=rollout.gpu_memory_utilization,
                vllm_enable_sleep_mode=rollout.sleep, vllm_max_model_length=rollout.max_model_len or None)


def trl_args(kind: str, cfg: GRPOConfig | DistillConfig, seed: int, device: str, output_dir: str,
             rollout: RolloutConfig = RolloutConfig()) -> Any:
    """Our stage config -> the TRL config of the trainer that runs it (the one translation point)."""
    common = dict(
        output_dir=output_dir, max_steps=cfg.steps, learning_rate=cfg.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=cfg.max_grad_norm, logging_steps=1, save_strategy="no", report_to=[],
        seed=seed, bf16=False, use_cpu=device == "cpu", gradient_checkpointing=False, remove_unused_columns=False,
        temperature=cfg.temperature, disable_tqdm=False,
    )
    if kind == "grpo":
        assert isinstance(cfg, GRPOConfig)
        return trl.GRPOConfig(
            **common, per_device_train_batch_size=cfg.prompts_per_step * cfg.samples_per_prompt,
            num_generations=cfg.samples_per_prompt, num_iterations=cfg.updates_per_batch, max_completion_length=cfg.max_new_tokens,
            epsilon=cfg.clip_low, epsilon_high=cfg.clip_high, beta=cfg.kl_coef, scale_rewards="group" if cfg.scale_rewards else "none",
            loss_type="dapo", top_k=0, top_p=1.0,  # dapo: token mean over the batch, as losses.policy_loss
            **vllm_args(rollout),
        )
    if kind == "forward_kl":
        from trl.experimental.gkd import GKDConfig

        return GKDConfig(**common, per_device_train_batch_size=cfg.batch_size, lmbda=0.0, beta=0.0, seq_kd=False,
                         max_new_tokens=cfg.max_new_tokens, dataset_kwargs={"skip_prepare_dataset": True})
    return trl.DistillationConfig(**common, per_device_train_batch_size=cfg.batch_size, beta=1.0,
                                  max_completion_length=cfg.max_new_tokens, top_k=0, top_p=1.0, **vllm_args(rollout))


class _Metrics(TrainerCallback):
    """TRL's per-step logs -> the stage's metrics.jsonl, under our names."""

    def __init__(self, log: Logger) -> None:
        self.log = log

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - TrainerCallback signature
        if logs and "train_runtime" not in logs:
            row = {ours: float(logs[theirs]) for theirs, ours in METRIC_NAMES.items() if theirs in logs}
            self.log({"step": state.global_step - 1, **row})


class _QuietProgress(ProgressCallback):
    """TRL's step bar without its per-step dict printed to stdout (metrics.jsonl has them)."""

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        return None


def _train(trainer) -> None:  # noqa: ANN001 - any TRL trainer
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_QuietProgress())
    trainer.train()


def _chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


class TRLBackend:
    name = "trl"

    def __init__(self) -> None:
        self._sampler = TorchBackend()  # diagnostics sample with it; validate gives it the run's rollout setting
        self._tmp = tempfile.TemporaryDirectory(prefix="s2d-trl-")

    def validate(self, cfg: RunConfig) -> None:
        refuse_unexpressible(cfg)
        self._sampler.validate(cfg)

    def generate(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: list[str], sampling: Sampling, seed: int) -> Rollouts:
        return self._sampler.generate(model, tok, prompts, sampling, seed)

    # ------------------------------------------------------------------ stages 1 and 3
    def teacher_rl(self, job: RLJob) -> StageReport:
        return self._grpo(job)

    def student_rl(self, job: RLJob) -> StageReport:
        return self._grpo(job)

    def _grpo(self, job: RLJob) -> StageReport:
        by_id = {p.id: p for p in job.problems}
        draws: list[str] = []
        k = job.cfg.samples_per_prompt

        def reward(prompts, completions, problem_id, **_) -> list[float]:  # noqa: ANN001 - TRL's reward signature
            draws.extend(problem_id[::k])  # one draw per group of k samples
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            return [float(job.grade(t, by_id[i])) for t, i in zip(texts, problem_id)]

        data = Dataset.from_list([{"prompt": _chat(p.prompt), "problem_id": p.id} for p in job.problems])
        args = trl_args("grpo", job.cfg, job.seed, job.policy.device.type, self._tmp.name, self._sampler.rollout)
        trainer = trl.GRPOTrainer(model=job.policy, reward_funcs=reward, args=args, train_dataset=data,
                                  processing_class=job.tok, callbacks=[_Metrics(job.log)])
        _train(trainer)
        return StageReport(steps=job.cfg.steps, labeled_draws=draws)

    # ------------------------------------------------------------------ stages 2a and 2b
    def warmup(self, job: DistillJob) -> StageReport:
        from trl.experimental.gkd import GKDTrainer

        rows = self._teacher_rollouts(job)
        data = Dataset.from_list([{"messages": _chat(r["prompt"]) + [{"role": "assistant", "content": r["completion"]}]} for r in rows])
        args = trl_args("forward_kl", job.cfg, job.seed, job.student.device.type, self._tmp.name)
        trainer = GKDTrainer(model=job.student, teacher_model=job.teacher, args=args, train_dataset=data,
                             processing_class=job.tok, callbacks=[_Metrics(job.log)])
        _train(trainer)
        return StageReport(steps=job.cfg.steps)

    def _teacher_rollouts(self, job: DistillJob) -> list[dict[str, str]]:
        """steps x batch_size teacher samples, generated once; cached beside the stage's model when it has a folder."""
        cache = Path(job.workdir) / "teacher_rollouts.jsonl" if job.workdir else None
        if cache is not None and cache.exists():
            return [json.loads(line) for line in cache.read_text().splitlines()]
        rng = random.Random(job.seed)
        sampling = Sampling(k=1, temperature=job.cfg.temperature, max_new_tokens=job.cfg.max_new_tokens)
        rows = []
        with open_rollouts(self._sampler.rollout, job.teacher, job.tok, live=False) as rollouts:
            for _ in range(job.cfg.steps):
                prompts = rng.sample(job.prompts, min(job.cfg.batch_size, len(job.prompts)))
                roll = rollouts.generate(prompts, sampling, rng.randrange(2**31))
                rows.extend({"prompt": p, "completion": t} for p, t in zip(prompts, roll.texts))
        if cache is not None:
            tmp = cache.with_suffix(".partial")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
            os.replace(tmp, cache)
        return rows

    def opd(self, job: DistillJob) -> StageReport:
        data = Dataset.from_list([{"prompt": _chat(p)} for p in job.prompts])
        args = trl_args("reverse_kl", job.cfg, job.seed, job.student.device.type, self._tmp.name, self._sampler.rollout)
        trainer = trl.DistillationTrainer(model=job.student, teacher_model=job.teacher, args=args, train_dataset=data,
                                          processing_class=job.tok, callbacks=[_Metrics(job.log)])
        _train(trainer)
        return StageReport(steps=job.cfg.steps)
