"""One step of each stage: the TRL backend's loss equals the plain-PyTorch backend's on the same batch.

Both backends sample their own completions with their own generators, so the comparison feeds
one fixed batch (teacher samples of the tiny models) to each side's loss: ours from
`s2d_bench.losses`, TRL's from the trainer our backend builds (`trl_args`). Loss values and
gradients must agree to float32 rounding (rtol 1e-4). Stage 2a hands GKD's collator the exact
token ids the torch backend trains (rendered prompt, sampled completion with its stop token), so
no template newline and no re-tokenisation enter its loss.
"""

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402

from s2d_bench import losses  # noqa: E402
from s2d_bench.backends.trl_backend import _rollout_rows, trl_args  # noqa: E402
from s2d_bench.config import DistillConfig, GRPOConfig  # noqa: E402
from s2d_bench.generation.engine import EngineConfig  # noqa: E402
from s2d_bench.generation.hf import HFEngine  # noqa: E402
from s2d_bench.generation.protocol import prompt_seeds  # noqa: E402
from s2d_bench.generation.sampling import Sampling  # noqa: E402
from s2d_bench.models.builders import tiny_qwen3_student  # noqa: E402
from s2d_bench.models.sequences import completion_logits, token_logprobs  # noqa: E402

PROMPTS = ["12+34=", "5+6=", "100+200=", "7+8="]


@pytest.fixture
def world(tmp_path):
    student, tok = tiny_qwen3_student(seed=0)
    teacher, _ = tiny_qwen3_student(seed=1)
    roll = HFEngine(teacher, tok, EngineConfig(prompts_per_batch=0)).rollouts(PROMPTS, Sampling(k=2, temperature=1.0, max_new_tokens=8),
                                                                              prompt_seeds(3, len(PROMPTS)))
    return student, teacher, tok, roll, str(tmp_path)


def _grads(model, loss) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _trl_inputs(batch):
    p = batch.prompt_len
    return {"prompt_ids": batch.input_ids[:, :p], "prompt_mask": batch.attention_mask[:, :p],
            "completion_ids": batch.completion_ids, "completion_mask": batch.completion_mask.long()}


def _parts(batch, micro: int):
    """The micro-batches TRL sees: the whole step (micro 0), or halves when micro_batch_size is half of it."""
    if not micro:
        return [batch]
    n = batch.completion_ids.shape[0] // 2
    return [batch.rows(slice(0, n)), batch.rows(slice(n, 2 * n))]


@pytest.mark.parametrize("micro", [0, 4], ids=["whole-step", "accumulated"])
def test_grpo_step_matches(world, micro):
    """micro_batch_size 4 of 8 sequences: TRL gets 4 per device and 2 accumulation steps (one rollout batch per
    optimizer step), and its micro-batch losses add up to our loss on the whole step."""
    import trl

    from s2d_bench.backends.trl_backend import accumulation

    student, _, tok, roll, out = world
    batch, mask = roll.batch, roll.batch.completion_mask
    advantages = losses.grpo_advantages(torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])).flatten()
    cfg = GRPOConfig(steps=1, prompts_per_step=4, samples_per_prompt=2, clip_high=0.28, micro_batch_size=micro)
    steps = 2 if micro else 1
    assert accumulation(cfg) == {"per_device_train_batch_size": 8 // steps, "gradient_accumulation_steps": steps}
    logp = token_logprobs(completion_logits(student, batch), batch.completion_ids)
    ours, _ = losses.policy_loss(logp, logp.detach(), advantages, mask, cfg.clip_low, cfg.clip_high, None, 0.0)
    ours_grad = _grads(student, ours)

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS])
    args = trl_args("grpo", cfg, 0, "cpu", out)
    assert (args.gradient_accumulation_steps, args.steps_per_generation) == (steps, steps)
    trainer = trl.GRPOTrainer(model=student, reward_funcs=lambda completions, **_: [0.0] * len(completions),
                              args=args, train_dataset=data, processing_class=tok)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = steps  # set by Trainer's loop
    theirs = sum(trainer._compute_loss(student, {**_trl_inputs(part), "advantages": adv, "num_items_in_batch": mask.sum()})
                 for part, adv in zip(_parts(batch, micro), advantages.chunk(steps)))
    torch.testing.assert_close(theirs.detach(), ours.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(_grads(student, theirs), ours_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("micro", [0, 4], ids=["whole-step", "accumulated"])
def test_on_policy_distillation_step_matches(world, micro):
    import trl

    student, teacher, tok, roll, out = world
    batch, mask = roll.batch, roll.batch.completion_mask
    with torch.no_grad():
        t_logits = completion_logits(teacher, batch)
    ours = losses.reverse_kl(completion_logits(student, batch), t_logits, mask)
    ours_grad = _grads(student, ours)

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS])
    args = trl_args("reverse_kl", DistillConfig(steps=1, batch_size=8, micro_batch_size=micro), 0, "cpu", out)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == ((4, 2) if micro else (8, 1))
    trainer = trl.DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data, processing_class=tok)
    theirs = sum(trainer._compute_loss(student, _trl_inputs(part), mask.sum())[0] for part in _parts(batch, micro))
    torch.testing.assert_close(theirs.detach(), ours.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(_grads(student, theirs), ours_grad, rtol=1e-4, atol=1e-6)


def test_forward_kl_warmup_step_matches_on_exactly_the_tokens_torch_trains(world):
    from trl.experimental.gkd import GKDTrainer

    student, teacher, tok, roll, out = world
    batch = roll.batch  # what the torch backend's warmup trains: prompt, completion, its stop token, nothing more
    with torch.no_grad():
        t_logits = completion_logits(teacher, batch)
    ours = losses.forward_kl(completion_logits(student, batch), t_logits, batch.completion_mask)
    ours_grad = _grads(student, ours)

    prompts = [p for p in PROMPTS for _ in range(2)]
    rows = [{"prompt": r["prompt"], "input_ids": r["prompt_ids"] + r["completion_ids"],
             "completion_mask": [0] * len(r["prompt_ids"]) + [1] * len(r["completion_ids"])}
            for r in _rollout_rows(tok, prompts, roll, thinking=False)]
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=trl_args("forward_kl", DistillConfig(steps=1), 0, "cpu", out),
                         train_dataset=Dataset.from_list(rows), processing_class=tok)
    inputs = trainer.data_collator(rows)
    theirs = trainer.compute_loss(student, inputs)
    torch.testing.assert_close(theirs.detach(), ours.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(_grads(student, theirs), ours_grad, rtol=1e-4, atol=1e-6)
