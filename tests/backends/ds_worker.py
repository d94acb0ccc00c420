"""One rank of the DeepSpeed multi-process checks (run by test_deepspeed.py, never collected).

Every rank builds the same tiny models and the same fixed batch (8 prompts x 2 teacher samples),
keeps its share of the prompts, and takes one step of each stage's update (GRPO, forward KL,
reverse KL: full, top-k, sampled) at temperature 0.7 with SGD through `torch_backend`'s update
functions on a DeepSpeed runtime, once per ZeRO stage and micro-batch size named on the command
line. It writes the final parameters to <out>/<zero>-mb<micro>-rank<r>-of-<world>.pt and each step's
logged metrics to the same name with .json.

With `rollouts <engine>` instead of ZeRO stages, it runs the teacher_rl and opd stages whole under
ZeRO-3, sampling with that rollout engine, and writes <out>/<engine>-rank<r>.pt.

With `partitioned <model dir>`, it loads that model as the backend does under ZeRO-3 (trained model
and teacher partitioned as they load), writes how much of it this rank holds, trains teacher_rl
(with a KL anchor: a partitioned copy) and opd a step each, and saves the result as rank 0 does, to
<out>/trained-<world>/ and <out>/held-rank<r>-of-<world>.json.
"""

import contextlib
import json
import sys
from pathlib import Path

import torch

from s2d_bench import chunked, distributed, losses
from s2d_bench.backends.deepspeed_backend import DeepSpeedBackend, DeepSpeedRuntime
from s2d_bench.backends.batching import shard
from s2d_bench.backends.torch_backend import distill_update, policy_updates
from s2d_bench.config import DeepSpeedConfig, DistillConfig, GRPOConfig, TaskConfig, load_config
from s2d_bench.generation.engine import EngineConfig
from s2d_bench.generation.hf import HFEngine
from s2d_bench.generation.protocol import prompt_seeds, render
from s2d_bench.generation.sampling import Sampling
from s2d_bench.harness.rewards import Scores
from s2d_bench.models.builders import save, tiny_qwen3_student
from s2d_bench.models.sequences import join
from s2d_bench.stages import STAGES, StageInputs
from s2d_bench.tasks import TASKS

PROMPTS = ["12+34=", "5+6=", "100+200=", "7+8=", "9+9=", "31+4=", "250+250=", "1+0="]
K = 2


def fixed_batch(tok, teacher, prompts):
    """The teacher's samples for `prompts`, k each; rows of one prompt stay together."""
    roll = HFEngine(teacher, tok, EngineConfig(prompts_per_batch=0)).rollouts(PROMPTS, Sampling(k=K, temperature=1.0, max_new_tokens=8),
                                                                              prompt_seeds(3, len(PROMPTS)))
    rows = [i * K + j for i, p in enumerate(PROMPTS) if p in prompts for j in range(K)]
    ids, mask = roll.batch.completion_ids[rows], roll.batch.completion_mask[rows]
    return join([r for r in render(tok, prompts, False) for _ in range(K)], ids, mask, tok.pad_token_id)


def main(out: str, stages: list[int], micro_sizes: list[int]) -> None:
    torch.manual_seed(0)
    for zero in stages:
        for micro in micro_sizes:
            # Plain SGD (DeepSpeed builds it from the config): the parameter change is then proportional to the
            # gradient. Adam's first step is lr * g / (|g| + eps), which turns float-rounding noise in
            # near-zero gradients into lr-sized differences and would hide a real mismatch behind a loose tolerance.
            rt = DeepSpeedRuntime(DeepSpeedConfig(zero_stage=zero, extra={"optimizer": {"type": "SGD", "params": {"lr": 0.5}}}))
            student, tok = tiny_qwen3_student(seed=0)
            teacher, _ = tiny_qwen3_student(seed=1)
            batch = fixed_batch(tok, teacher, shard(PROMPTS, rt.rank, rt.world))
            teacher = rt.frozen(teacher)
            rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]] * 2)[[PROMPTS.index(p) for p in shard(PROMPTS, rt.rank, rt.world)]]
            advantages = losses.grpo_advantages(rewards).flatten()
            grpo = GRPOConfig(lr=1e-3, chunk_size=5, micro_batch_size=micro, temperature=0.7)  # several chunks, padded under ZeRO-3
            distill = DistillConfig(chunk_size=5, micro_batch_size=micro, temperature=0.7)
            objectives = [chunked.Objective("forward"), chunked.Objective("reverse"), chunked.Objective("reverse", "topk", 8),
                          chunked.Objective("reverse", "sampled")]
            logged = []
            for step in range(1 + len(objectives)):
                trainer = rt.trainer(student, lr=1e-3, max_norm=1.0)
                if step == 0:
                    logged.append(policy_updates(trainer, None, batch, advantages, grpo, rt))
                else:
                    logged.append(distill_update(trainer, teacher, batch, objectives[step - 1], distill, rt))
                trainer.finish()
            flat = torch.cat([p.detach().flatten().float() for p in student.parameters()])
            torch.save(flat, f"{out}/{zero}-mb{micro}-rank{rt.rank}-of-{rt.world}.pt")
            Path(f"{out}/{zero}-mb{micro}-rank{rt.rank}-of-{rt.world}.json").write_text(json.dumps(logged))
    distributed.shutdown()


def rollout_stages(out: str, engine: str) -> None:
    cfg = load_config(None, ["backend=deepspeed", "deepspeed.zero_stage=3", f"rollout.engine={engine}", "stages.teacher_rl.steps=2",
                             "stages.teacher_rl.prompts_per_step=4", "stages.opd.steps=2", "stages.opd.batch_size=4"])
    backend = DeepSpeedBackend(cfg)
    splits = TASKS.get("add3mix")(TaskConfig(n_labeled=16, n_unlabeled=64, n_test=6)).splits()
    student, tok = tiny_qwen3_student(seed=0)
    teacher, _ = tiny_qwen3_student(seed=1)
    grade = lambda texts, problems: Scores([float(len(t) % 2 == 0) for t in texts])  # noqa: E731 - a signal on tiny models
    import vllm  # the stand-in (tests/fakes on the path): the hf run samples each stream as it does

    with vllm.seeded_as_vllm() if engine == "hf" else contextlib.nullcontext():
        STAGES.get("teacher_rl").run(StageInputs(backend, teacher, None, tok, splits, grade, cfg.stages.teacher_rl, 0, lambda row: None))
        STAGES.get("opd").run(StageInputs(backend, student, teacher, tok, splits, grade, cfg.stages.opd, 0, lambda row: None))
    flat = torch.cat([p.detach().flatten().float() for m in (teacher, student) for p in m.parameters()])
    torch.save(flat, f"{out}/{engine}-rank{distributed.rank()}.pt")
    distributed.shutdown()


def partitioned(out: str, source: str) -> None:
    import deepspeed

    cfg = load_config(None, ["backend=deepspeed", "deepspeed.zero_stage=3", "deepspeed.teacher_zero3=true", "stages.teacher_rl.steps=1",
                             "stages.teacher_rl.prompts_per_step=4", "stages.teacher_rl.kl_coef=0.5", "stages.opd.steps=1", "stages.opd.batch_size=4"])
    backend = DeepSpeedBackend(cfg)
    student, tok = backend.load(source, trained=True)
    teacher, _ = backend.load(source, trained=False)
    rank, world = distributed.rank(), distributed.world()
    held = {role: {"local": sum(p.ds_tensor.numel() for p in m.parameters()), "whole": sum(p.ds_numel for p in m.parameters()),
                   "visible": sum(p.numel() for p in m.parameters()), "tensors": len(list(m.parameters()))}
            for role, m in (("student", student), ("teacher", teacher))}
    ref = backend.loops.runtime.reference(student)
    with deepspeed.zero.GatheredParameters([*student.parameters(), *ref.parameters()]):
        held["reference_equal"] = all(torch.equal(a, b) for a, b in zip(student.parameters(), ref.parameters()))
    splits = TASKS.get("add3mix")(TaskConfig(n_labeled=16, n_unlabeled=64, n_test=6)).splits()
    grade = lambda texts, problems: Scores([float(len(t) % 2 == 0) for t in texts])  # noqa: E731 - a signal on tiny models
    STAGES.get("teacher_rl").run(StageInputs(backend, student, None, tok, splits, grade, cfg.stages.teacher_rl, 0, lambda row: None))
    STAGES.get("opd").run(StageInputs(backend, student, teacher, tok, splits, grade, cfg.stages.opd, 0, lambda row: None))
    with backend.saving(student):
        if rank == 0:
            save(student, tok, Path(out) / f"trained-{world}")
    (Path(out) / f"held-rank{rank}-of-{world}.json").write_text(json.dumps(held))
    distributed.shutdown()


def bf16_accumulation(out: str) -> None:
    """One forward-KL step in bf16 under ZeRO-2, the fixed batch whole and in 16 one-sequence micro-batches, with
    the backend's gradient accumulation (fp32) and with DeepSpeed's default (the model's bf16, forced through
    `extra`). Writes <out>/bf16.json: each accumulation's relative L2 distance between the micro-batched and the whole
    step, both read from the fp32 master weights an SGD step of lr 0.5 moved."""
    from deepspeed.utils import safe_get_full_fp32_param

    def step(micro: int, extra: dict) -> torch.Tensor:
        rt = DeepSpeedRuntime(DeepSpeedConfig(zero_stage=2, bf16=True, extra={"optimizer": {"type": "SGD", "params": {"lr": 0.5}}, **extra}))
        student, tok = tiny_qwen3_student(seed=0)
        teacher, _ = tiny_qwen3_student(seed=1)
        batch = fixed_batch(tok, teacher, PROMPTS)
        trainer = rt.trainer(student, lr=1e-3, max_norm=0.0)
        before = torch.cat([safe_get_full_fp32_param(p).flatten() for p in trainer.model.parameters()])
        distill_update(trainer, rt.frozen(teacher), batch, chunked.Objective("forward"), DistillConfig(micro_batch_size=micro), rt)
        return before - torch.cat([safe_get_full_fp32_param(p).flatten() for p in trainer.model.parameters()])

    errors = {}
    for name, extra in (("fp32", {}), ("bf16", {"data_types": {"grad_accum_dtype": "bf16"}})):
        whole, micro = step(0, extra), step(1, extra)
        errors[name] = float((micro - whole).norm() / whole.norm())
    Path(out, "bf16.json").write_text(json.dumps(errors))
    distributed.shutdown()


if __name__ == "__main__":
    if sys.argv[2] == "bf16":
        bf16_accumulation(sys.argv[1])
    elif sys.argv[2] == "rollouts":
        rollout_stages(sys.argv[1], sys.argv[3])
    elif sys.argv[2] == "partitioned":
        partitioned(sys.argv[1], sys.argv[3])
    else:
        main(sys.argv[1], [int(z) for z in sys.argv[2].split(",")], [int(m) for m in sys.argv[3].split(",")])
