"""TRL backend (extra `trl`): the four stages on the trainers the field already trusts.

  stages 1 and 3  trl.GRPOTrainer, our grader as the reward function
  stage 2a        trl.experimental.gkd.GKDTrainer with lmbda=0 (never on-policy) and beta=0
                  (forward KL(teacher || student)) on teacher rollouts generated once per stage
                  and cached as JSON Lines beside the stage's model; GKD's loss takes no temperature, so
                  the warmup runs at temperature 1 on TRL (refused otherwise, backends/refusals.py)
  stage 2b        trl.DistillationTrainer with beta=1: on-policy reverse KL(student || teacher)

Our configs are translated into TRL's in `trl_args` and nowhere else; our config classes never
inherit TRL's. Options TRL cannot express are declared in `backends/refusals.py` and refused by the preflight before any stage runs.
TRL renders prompts itself, so it gets our protocol: `enable_thinking` as `chat_template_kwargs`
(per example for GKD's messages), and its stop set is the same union of generation-config and
tokenizer EOS ids as `generation.protocol.stop_ids` (tested). Rewards go through our grading pool, on
the text `protocol.completion_texts` decodes from the sampled ids (as every engine's), not TRL's.
GRPO and Distillation train the ids they sampled, cut after the first stop token (nothing appended
to a reply cut at the cap); stage 2a is handed ours (tested in tests/backends/test_parity.py).
`rollout.engine: vllm` turns on TRL's own colocated vLLM in stages 1, 2b and 3, and our vLLM
engine for the warmup's teacher rollouts.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import trl  # noqa: E402  - a missing extra surfaces as the registry's pip hint
from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from transformers.trainer_callback import ProgressCallback  # noqa: E402

from s2d_bench.backends.base import DistillJob, Logger, RLJob, StageReport  # noqa: E402
from s2d_bench.config import DistillConfig, GRPOConfig, PromptConfig, RolloutConfig, RunConfig  # noqa: E402
from s2d_bench.generation import ENGINES  # noqa: E402
from s2d_bench.generation.engine import open_rollouts, resolve_device  # noqa: E402
from s2d_bench.generation.protocol import completion_texts, draw_step, render_texts, user_turn  # noqa: E402
from s2d_bench.generation.rollouts import Rollouts  # noqa: E402
from s2d_bench.generation.sampling import Sampling  # noqa: E402
from s2d_bench.models.builders import load_pretrained  # noqa: E402

# TRL log keys -> ours, so metrics.jsonl reads the same on every backend
METRIC_NAMES = {"reward": "reward", "loss": "loss", "grad_norm": "grad_norm", "entropy": "entropy", "kl": "kl",
                "completions/mean_length": "response_length", "learning_rate": "lr"}


def accumulation(cfg: GRPOConfig | DistillConfig) -> dict[str, int]:
    """Our optimizer step as TRL's: a mini-batch (the whole step unless GRPO's mini_batches) in micro-batches of
    `micro_batch_size` sequences, accumulated (preflight refuses sizes that do not divide evenly)."""
    per_step = cfg.step_sequences // cfg.step_mini_batches
    micro = cfg.micro_batch_size or per_step
    return {"per_device_train_batch_size": micro, "gradient_accumulation_steps": per_step // micro}


def vllm_args(rollout: RolloutConfig) -> dict[str, Any]:
    """TRL's colocated vLLM (GRPO and Distillation trainers) for `rollout.engine: vllm`."""
    if rollout.engine != "vllm":
        return {}
    return dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=rollout.gpu_memory_utilization,
                vllm_enable_sleep_mode=rollout.sleep, vllm_max_model_length=rollout.max_model_len or None)


def trl_args(kind: str, cfg: GRPOConfig | DistillConfig, seed: int, device: str, output_dir: str,
             rollout: RolloutConfig = RolloutConfig(), prompt: PromptConfig = PromptConfig()) -> Any:
    """Our stage config -> the TRL config of the trainer that runs it (the one translation point)."""
    template = {"chat_template_kwargs": {"enable_thinking": prompt.thinking}}  # GKD: per example instead (see warmup)
    common = dict(
        output_dir=output_dir, max_steps=cfg.steps, learning_rate=cfg.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=cfg.max_grad_norm, logging_steps=1, save_strategy="no", report_to=[],
        seed=seed, bf16=False, use_cpu=device == "cpu", gradient_checkpointing=cfg.gradient_checkpointing, remove_unused_columns=False,
        temperature=cfg.temperature, disable_tqdm=False,
    )
    if kind == "grpo":
        assert isinstance(cfg, GRPOConfig)
        return trl.GRPOConfig(
            **{**common, "max_steps": cfg.steps * cfg.updates_per_batch * cfg.mini_batches},  # TRL counts optimizer steps; ours, rollout batches
            **accumulation(cfg), steps_per_generation=accumulation(cfg)["gradient_accumulation_steps"] * cfg.mini_batches,  # one rollout batch a step
            num_generations=cfg.samples_per_prompt, num_iterations=cfg.updates_per_batch, max_completion_length=cfg.max_new_tokens,
            epsilon=cfg.clip_low, epsilon_high=cfg.clip_high, beta=cfg.kl_coef, scale_rewards="group" if cfg.scale_rewards else "none",
            loss_type="dapo", top_k=0, top_p=1.0,  # dapo: token mean over the batch, as losses.policy_loss
            **vllm_args(rollout), **template,
            # ours takes ratios against the training model's own log-probs, never vLLM's: no IS correction either
            **({"vllm_importance_sampling_correction": False} if rollout.engine == "vllm" else {}),
        )
    if kind == "forward_kl":
        from trl.experimental.gkd import GKDConfig

        # sequential: step s trains rows s*B..(s+1)*B, the batch the torch backend's warmup draws at step s
        return GKDConfig(**common, **accumulation(cfg), lmbda=0.0, beta=0.0, seq_kd=False, train_sampling_strategy="sequential",
                         max_new_tokens=cfg.max_new_tokens, dataset_kwargs={"skip_prepare_dataset": True})
    if kind == "reverse_kl":
        return trl.DistillationConfig(**common, **accumulation(cfg), beta=1.0,
                                      max_completion_length=cfg.max_new_tokens, top_k=0, top_p=1.0, **vllm_args(rollout), **template)
    raise ValueError(f"no TRL trainer for {kind!r}: grpo, forward_kl or reverse_kl")


class _Metrics(TrainerCallback):
    """TRL's per-step logs -> the stage's metrics.jsonl, under our names (plus our reward's timeout count)."""

    def __init__(self, log: Logger, timeouts: list[int] | None = None) -> None:
        self.log, self.timeouts, self._seen = log, timeouts, 0

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - TrainerCallback signature
        if logs and "train_runtime" not in logs:
            row = {ours: float(logs[theirs]) for theirs, ours in METRIC_NAMES.items() if theirs in logs}
            if self.timeouts is not None:
                row["grading_timeouts"] = float(sum(self.timeouts[self._seen :]))
                self._seen = len(self.timeouts)
            self.log({"step": state.global_step - 1, **row})


class _QuietProgress(ProgressCallback):
    """TRL's step bar without its per-step dict printed to stdout (metrics.jsonl has them)."""

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        return None


def _train(trainer) -> None:  # noqa: ANN001 - any TRL trainer
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_QuietProgress())
    try:
        trainer.train()
    finally:
        _release(trainer)


def _release(trainer) -> None:  # noqa: ANN001 - any TRL trainer
    """A finished trainer holds its colocated vLLM engine, optimizer and accelerator state until collected, and a
    vLLM start freezes the collector: its engine is shut down and its state freed now, so the next stage's engine
    can start (sleep mode allows one engine a process) and its memory is free."""
    llm = getattr(getattr(trainer, "vllm_generation", None), "llm", None)
    if llm is not None:
        from s2d_bench.generation.vllm import shutdown

        shutdown(llm)
        trainer.vllm_generation.llm = None
    trainer.accelerator.free_memory()  # accelerate's release_memory: a collection and the CUDA cache emptied


def _rollout_rows(tok, prompts: list[str], roll: Rollouts, thinking: bool) -> list[dict[str, Any]]:  # noqa: ANN001
    """One row per sample (k = 1): the rendered prompt (text and ids), the completion's text and ids."""
    texts, batch = render_texts(tok, prompts, thinking), roll.batch
    rows = []
    for i, prompt in enumerate(prompts):
        prompt_ids = batch.input_ids[i, : batch.prompt_len][batch.attention_mask[i, : batch.prompt_len].bool()].tolist()
        completion_ids = batch.completion_ids[i][batch.completion_mask[i].bool()].tolist()
        rows.append({"problem": prompt, "prompt": texts[i], "prompt_ids": prompt_ids, "completion": roll.texts[i],
                     "completion_ids": completion_ids})
    return rows


class TRLBackend:
    name = "trl"

    def __init__(self, cfg: RunConfig) -> None:
        ENGINES.get(cfg.rollout.engine)  # a missing extra fails now
        self.rollout, self.prompt, self.device = cfg.rollout, cfg.prompt, resolve_device(cfg.device)
        self._tmp = tempfile.TemporaryDirectory(prefix="s2d-trl-")

    def load(self, ref: str, trained: bool) -> tuple[Any, Any]:
        return load_pretrained(ref, self.device)

    def saving(self, model: Any) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def memory_layout(self) -> dict:
        return {}  # one process, fp32 states

    # ------------------------------------------------------------------ stages 1 and 3
    def teacher_rl(self, job: RLJob) -> StageReport:
        return self._grpo(job)

    def student_rl(self, job: RLJob) -> StageReport:
        return self._grpo(job)

    def _grpo(self, job: RLJob) -> StageReport:
        by_id = {p.id: p for p in job.problems}
        draws: list[str] = []
        timeouts: list[int] = []
        k = job.cfg.samples_per_prompt

        def reward(prompts, completions, completion_ids, problem_id, **_) -> list[float]:  # noqa: ANN001 - TRL's reward signature
            draws.extend(problem_id[::k])  # one draw per group of k samples
            scores = job.reward(completion_texts(job.tok, completion_ids), [by_id[i] for i in problem_id])
            timeouts.append(scores.timeouts)
            return scores.rewards

        data = Dataset.from_list([{"prompt": user_turn(p.prompt), "problem_id": p.id} for p in job.problems])
        args = trl_args("grpo", job.cfg, job.seed, job.policy.device.type, self._tmp.name, self.rollout, self.prompt)
        trainer = trl.GRPOTrainer(model=job.policy, reward_funcs=reward, args=args, train_dataset=data,
                                  processing_class=job.tok, callbacks=[_Metrics(job.log, timeouts)])
        _train(trainer)
        return StageReport(steps=job.cfg.steps, labeled_draws=draws)

    # ------------------------------------------------------------------ stages 2a and 2b
    def warmup(self, job: DistillJob) -> StageReport:
        from trl.experimental.gkd import GKDTrainer

        rows = self._teacher_rollouts(job)
        # The exact tokens the torch backend trains: our rendered prompt, then the sampled completion up to and
        # including its stop token (ChatML's collator takes input_ids and a completion mask as they are).
        data = Dataset.from_list([{"prompt": r["prompt"], "input_ids": r["prompt_ids"] + r["completion_ids"],
                                   "completion_mask": [0] * len(r["prompt_ids"]) + [1] * len(r["completion_ids"])} for r in rows])
        args = trl_args("forward_kl", job.cfg, job.seed, job.student.device.type, self._tmp.name)
        trainer = GKDTrainer(model=job.student, teacher_model=job.teacher, args=args, train_dataset=data,
                             processing_class=job.tok, callbacks=[_Metrics(job.log)])
        _train(trainer)
        return StageReport(steps=job.cfg.steps)

    def _teacher_rollouts(self, job: DistillJob) -> list[dict[str, Any]]:
        """steps x batch_size teacher samples as token ids, generated once; cached beside the stage's model when it
        has a folder (a cache from before token ids were kept is regenerated)."""
        cache = Path(job.workdir) / "teacher_rollouts.jsonl" if job.workdir else None
        if cache is not None and cache.exists():
            rows = [json.loads(line) for line in cache.read_text().splitlines()]
            if all("completion_ids" in r for r in rows):
                return rows
        rng = random.Random(job.seed)
        sampling = Sampling(k=1, temperature=job.cfg.temperature, max_new_tokens=job.cfg.max_new_tokens)
        rows = []
        with open_rollouts(self.rollout, job.teacher, job.tok, self.prompt.thinking, trained=False) as engine:
            for _ in range(job.cfg.steps):
                prompts, seeds = draw_step(rng, job.prompts, job.cfg.batch_size)
                roll = engine.rollouts(prompts, sampling, seeds)
                rows.extend(_rollout_rows(job.tok, prompts, roll, self.prompt.thinking))
        if cache is not None:
            tmp = cache.with_suffix(".partial")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
            os.replace(tmp, cache)
        return rows

    def opd(self, job: DistillJob) -> StageReport:
        data = Dataset.from_list([{"prompt": user_turn(p)} for p in job.prompts])
        args = trl_args("reverse_kl", job.cfg, job.seed, job.student.device.type, self._tmp.name, self.rollout, self.prompt)
        trainer = trl.DistillationTrainer(model=job.student, teacher_model=job.teacher, args=args, train_dataset=data,
                                          processing_class=job.tok, callbacks=[_Metrics(job.log)])
        _train(trainer)
        return StageReport(steps=job.cfg.steps)
