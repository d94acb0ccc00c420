"""One step of each stage: the TRL backend's loss equals the plain-PyTorch backend's on the same batch.

Both backends sample their own completions with their own generators, so the comparison feeds
one fixed batch (teacher samples of the tiny models) to each side's loss: ours from
`s2d_bench.losses`, TRL's from the trainer our backend builds (`trl_args`). Loss values and
gradients must agree to float32 rounding (rtol 1e-4). One difference is by design and is
reproduced here rather than hidden: TRL's GKD collator renders the completion with the chat
template, so stage 2a also trains the newline the template writes after the end-of-turn token.
"""

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402

from s2d_bench import losses  # noqa: E402
from s2d_bench.backends.torch_backend import TorchBackend  # noqa: E402
from s2d_bench.backends.trl_backend import trl_args  # noqa: E402
from s2d_bench.config import DistillConfig, GRPOConfig  # noqa: E402
from s2d_bench.harness.sampling import Sampling  # noqa: E402
from s2d_bench.models.builders import tiny_qwen3_student  # noqa: E402
from s2d_bench.models.sequences import completion_logits, encode_prompts, join, token_logprobs  # noqa: E402

PROMPTS = ["12+34=", "5+6=", "100+200=", "7+8="]


@pytest.fixture
def world(tmp_path):
    student, tok = tiny_qwen3_student(seed=0)
    teacher, _ = tiny_qwen3_student(seed=1)
    roll = TorchBackend().generate(teacher, tok, PROMPTS, Sampling(k=2, temperature=1.0, max_new_tokens=8), seed=3)
    return student, teacher, tok, roll, str(tmp_path)


def _grads(model, loss) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _trl_inputs(batch):
    p = batch.prompt_len
    return {"prompt_ids": batch.input_ids[:, :p], "prompt_mask": batch.attention_mask[:, :p],
            "completion_ids": batch.completion_ids, "completion_mask": batch.completion_mask.long()}


def test_grpo_step_matches(world):
    import trl

    student, _, tok, roll, out = world
    batch, mask = roll.batch, roll.batch.completion_mask
    advantages = losses.grpo_advantages(torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])).flatten()
    cfg = GRPOConfig(steps=1, prompts_per_step=4, samples_per_prompt=2, clip_high=0.28)
    logp = token_logprobs(completion_logits(student, batch), batch.completion_ids)
    ours, _ = losses.policy_loss(logp, logp.detach(), advantages, mask, cfg.clip_low, cfg.clip_high, None, 0.0)
    ours_grad = _grads(student, ours)

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS])
    trainer = trl.GRPOTrainer(model=student, reward_funcs=lambda completions, **_: [0.0] * len(completions),
                              args=trl_args("grpo", cfg, 0, "cpu", out), train_dataset=data, processing_class=tok)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; one step, no accumulation
    inputs = {**_trl_inputs(batch), "advantages": advantages, "num_items_in_batch": mask.sum()}
    theirs = trainer._compute_loss(student, inputs)
    torch.testing.assert_close(theirs.detach(), ours.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(_grads(student, theirs), ours_grad, rtol=1e-4, atol=1e-6)


def test_on_policy_distillation_step_matches(world):
    import trl

    student, teacher, tok, roll, out = world
    batch, mask = roll.batch, roll.batch.completion_mask
    with torch.no_grad():
        t_logits = completion_logits(teacher, batch)
    ours = losses.reverse_kl(completion_logits(student, batch), t_logits, mask)
    ours_grad = _grads(student, ours)

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS])
    trainer = trl.DistillationTrainer(model=student, teacher_model=teacher, args=trl_args("reverse_kl", DistillConfig(steps=1), 0, "cpu", out),
                                      train_dataset=data, processing_class=tok)
    theirs, _, _ = trainer._compute_loss(student, _trl_inputs(batch), mask.sum())
    torch.testing.assert_close(theirs.detach(), ours.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(_grads(student, theirs), ours_grad, rtol=1e-4, atol=1e-6)


def test_forward_kl_warmup_step_matches_with_the_templates_trailing_newline(world):
    from trl.experimental.gkd import GKDTrainer

    student, teacher, tok, roll, out = world
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    completions = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] + newline for t in roll.texts]
    width = max(map(len, completions))
    ids = torch.tensor([c + [tok.pad_token_id] * (width - len(c)) for c in completions])
    cmask = torch.tensor([[1.0] * len(c) + [0.0] * (width - len(c)) for c in completions])
    prompts = [p for p in PROMPTS for _ in range(2)]
    batch = join(encode_prompts(tok, prompts), ids, cmask, tok.pad_token_id)
    with torch.no_grad():
        t_logits = completion_logits(teacher, batch)
    ours = losses.forward_kl(completion_logits(student, batch), t_logits, batch.completion_mask)
    ours_grad = _grads(student, ours)

    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": t}]} for p, t in zip(prompts, roll.texts)]
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=trl_args("forward_kl", DistillConfig(steps=1), 0, "cpu", out),
                         train_dataset=Dataset.from_list(rows), processing_class=tok)
    inputs = trainer.data_collator(rows)
    theirs = trainer.compute_loss(student, inputs)
    torch.testing.assert_close(theirs.detach(), ours.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(_grads(student, theirs), ours_grad, rtol=1e-4, atol=1e-6)
