"""Micro-batches and activation checkpointing change memory, never the step: the same parameters from
1, 2, 3 or all sequences per forward/backward, with or without checkpointing (torch backend; DeepSpeed
with 1 and 2 ranks is in test_deepspeed.py)."""

import pytest
import torch

from s2d_bench import chunked, losses
from s2d_bench.backends.runtime import AdamWTrainer, LocalRuntime
from s2d_bench.backends.torch_backend import distill_update, policy_updates
from s2d_bench.config import DistillConfig, GRPOConfig
from s2d_bench.generation.engine import EngineConfig
from s2d_bench.generation.hf import HFEngine
from s2d_bench.generation.protocol import prompt_seeds
from s2d_bench.generation.sampling import Sampling
from s2d_bench.models.builders import tiny_qwen3_student

PROMPTS = ["12+34=", "5+6=", "100+200=", "7+8=", "9+9="]
K = 2
STEPS = [("grpo", None), ("grpo-2-updates", None), ("grpo-2-mini-batches", None)] + [
    ("distill", o) for o in (chunked.Objective("forward"), chunked.Objective("reverse"), chunked.Objective("reverse", "topk", 8),
                             chunked.Objective("reverse", "sampled"))]


def _step(kind: str, objective, micro: int, checkpoint: bool = False) -> torch.Tensor:
    student, tok = tiny_qwen3_student(seed=0)
    teacher, _ = tiny_qwen3_student(seed=1)
    batch = HFEngine(teacher, tok, EngineConfig(prompts_per_batch=0)).rollouts(
        PROMPTS, Sampling(k=K, temperature=1.0, max_new_tokens=8), prompt_seeds(3, len(PROMPTS))).batch
    trainer = AdamWTrainer(student, 1e-3, 100.0)
    trainer.opt = torch.optim.SGD(student.parameters(), lr=0.5)  # the change is the gradient: rounding stays rounding
    rt = LocalRuntime()
    if kind.startswith("grpo"):
        advantages = losses.grpo_advantages(torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])).flatten()
        cfg = GRPOConfig(chunk_size=5, micro_batch_size=micro, temperature=0.7, updates_per_batch=2 if "updates" in kind else 1,
                         mini_batches=2 if "mini" in kind else 1,
                         gradient_checkpointing=checkpoint)
        policy_updates(trainer, None, batch, advantages, cfg, rt)
    else:
        distill_update(trainer, teacher.eval(), batch, objective, DistillConfig(chunk_size=5, micro_batch_size=micro, temperature=0.7,
                                                                               gradient_checkpointing=checkpoint), rt)
    return torch.cat([p.detach().flatten() for p in student.parameters()])


@pytest.mark.parametrize("kind, objective", STEPS, ids=[k if o is None else f"{o.direction}-{o.estimator}" for k, o in STEPS])
def test_a_step_over_micro_batches_equals_the_step_over_the_whole_batch(kind, objective):
    start = torch.cat([p.detach().flatten() for p in tiny_qwen3_student(seed=0)[0].parameters()])
    whole = _step(kind, objective, 0)
    assert (whole - start).abs().max() > 1e-4, "nothing trained"
    for micro in (1, 2, 3):  # 3 leaves a short last micro-batch of the 10 sequences
        torch.testing.assert_close(_step(kind, objective, micro), whole, rtol=1e-4, atol=1e-6, msg=f"micro_batch_size {micro}")
    torch.testing.assert_close(_step(kind, objective, 3, checkpoint=True), whole, rtol=1e-4, atol=1e-6, msg="checkpointing")


def test_checkpointing_is_on_for_the_update_only():
    """The sampler needs the KV cache, which transformers turns off in a checkpointed training-mode model."""
    from s2d_bench.models.checkpointing import checkpointing

    model, _ = tiny_qwen3_student()
    model.eval()
    with checkpointing(model, True):
        assert model.is_gradient_checkpointing and model.training
    assert not model.is_gradient_checkpointing and not model.training
