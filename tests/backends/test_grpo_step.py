"""The torch backend's GRPO loop, checked against the algorithm written out by hand: which log-probs the ratios are
taken against, the KL anchor, how rewards are grouped per prompt, and what a step logs."""

import copy

import pytest
import torch
from conftest import decoder_rows

from s2d_bench import chunked, losses
from s2d_bench.backends.base import RLJob
from s2d_bench.backends.runtime import AdamWTrainer, LocalRuntime
from s2d_bench.backends.torch_backend import TorchBackend, policy_updates
from s2d_bench.config import GRPOConfig, TaskConfig, load_config
from s2d_bench.generation.engine import EngineConfig
from s2d_bench.generation.hf import HFEngine
from s2d_bench.generation.protocol import prompt_seeds
from s2d_bench.generation.sampling import Sampling
from s2d_bench.harness.rewards import Scores
from s2d_bench.models.builders import tiny_qwen3_student
from s2d_bench.models.sequences import completion_hidden
from s2d_bench.tasks import TASKS

PROMPTS = ["12+34=", "5+6=", "100+200=", "7+8="]


def _batch():
    teacher, tok = tiny_qwen3_student(seed=1)
    return HFEngine(teacher, tok, EngineConfig(prompts_per_batch=0)).rollouts(
        PROMPTS, Sampling(k=2, temperature=1.0, max_new_tokens=8), prompt_seeds(3, len(PROMPTS))).batch


def _logprobs(model, batch, temperature):
    return chunked.token_logprobs(completion_hidden(model, batch), model.get_output_embeddings(), batch.completion_ids,
                                  batch.completion_mask, 0, 1, temperature)[0]


def _sgd(model):
    trainer = AdamWTrainer(model, 1e-3, 1e9)
    trainer.opt = torch.optim.SGD(model.parameters(), lr=2.0)  # big steps: the second pass's ratios leave the clip range
    return trainer


def test_two_passes_take_ratios_against_the_rollout_policy_and_pay_the_kl_to_the_anchor():
    batch = _batch()
    adv = losses.grpo_advantages(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])).flatten()
    cfg = GRPOConfig(updates_per_batch=2, clip_low=0.1, clip_high=0.1, kl_coef=0.5, temperature=0.7, max_grad_norm=1e9, chunk_size=0)
    model, _ = tiny_qwen3_student(seed=0)
    anchor, _ = tiny_qwen3_student(seed=2)  # an anchor unlike the policy: its KL term is not zero
    ours = copy.deepcopy(model)
    metrics = policy_updates(_sgd(ours), anchor.eval(), batch, adv, cfg, LocalRuntime())

    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    with torch.no_grad():
        old, fixed = _logprobs(model, batch, 0.7), _logprobs(anchor, batch, 0.7)
    for _ in range(2):
        loss, stats = losses.policy_loss(_logprobs(model, batch, 0.7), old, adv, batch.completion_mask, 0.1, 0.1, fixed, 0.5)
        loss.backward()
        opt.step()
        opt.zero_grad()
    for a, b in zip(ours.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert stats["clip_frac"] > 0 and metrics["clip_frac"] == stats["clip_frac"]  # the last pass's statistics are logged
    # to float rounding: ours runs each prompt once for its samples (completion_hidden's share_prompts), the hand loop not
    assert stats["kl_ref"] > 0 and metrics["kl_ref"] == pytest.approx(stats["kl_ref"], rel=1e-5)
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_the_update_runs_each_prompt_once_for_its_samples():
    """GRPO's k samples of a prompt are consecutive rows: the update's forward takes the prompt's positions once
    (`completion_hidden`'s share_prompts), which is most of a short answer's tokens."""
    batch = _batch()  # 4 prompts, 2 samples each
    model, _ = tiny_qwen3_student(seed=0)
    rows = decoder_rows(model)
    adv = torch.tensor([1.0, -1.0] * 4)
    policy_updates(AdamWTrainer(model, 1e-3, 1.0), None, batch, adv, GRPOConfig(samples_per_prompt=2, chunk_size=0), LocalRuntime())
    assert rows == [4, 8]  # the 4 prompts, then the 8 completions on their keys and values
    rows.clear()
    policy_updates(AdamWTrainer(model, 1e-3, 1.0), None, batch, adv, GRPOConfig(samples_per_prompt=2, chunk_size=0, micro_batch_size=1),
                   LocalRuntime())
    assert rows == [1] * 8  # micro-batches of one sequence: nothing to share, one forward each


def _job(scorer, steps=2, **cfg):
    policy, tok = tiny_qwen3_student(seed=0)
    problems = TASKS.get("add3mix")(TaskConfig(n_labeled=16, n_unlabeled=8, n_test=4)).splits().labeled
    rows: list[dict] = []
    job = RLJob("teacher_rl", policy, tok, problems, scorer, GRPOConfig(steps=steps, prompts_per_step=4, samples_per_prompt=3,
                                                                          max_new_tokens=6, **cfg), 7, rows.append)
    return job, rows


def test_each_completion_is_graded_against_its_own_prompt_and_a_group_of_equal_rewards_teaches_nothing():
    seen: list[list[str]] = []

    def scorer(texts, problems):
        seen.append([p.id for p in problems])
        return Scores([float(sum(map(ord, p.id)) % 2) for p in problems], timeouts=1)  # one reward per prompt

    job, rows = _job(scorer)
    before = {k: v.clone() for k, v in job.policy.state_dict().items()}
    report = TorchBackend(load_config(None, [])).teacher_rl(job)
    draws = report.labeled_draws
    assert seen == [[i for i in draws[s * 4:(s + 1) * 4] for _ in range(3)] for s in range(2)]  # k = 3 samples of each prompt
    assert all(torch.equal(before[k], v) for k, v in job.policy.state_dict().items())  # every advantage is 0
    for step, row in enumerate(rows):
        expected = sum(sum(map(ord, i)) % 2 for i in draws[step * 4:(step + 1) * 4]) / 4
        assert (row["step"], row["reward"], row["grading_timeouts"]) == (step, pytest.approx(expected), 1.0)


def test_rewards_that_differ_within_a_group_move_the_policy():
    job, rows = _job(lambda texts, problems: Scores([float(i % 3 == 0) for i in range(len(texts))]), steps=1)
    before = {k: v.clone() for k, v in job.policy.state_dict().items()}
    TorchBackend(load_config(None, [])).teacher_rl(job)
    assert any(not torch.equal(before[k], v) for k, v in job.policy.state_dict().items())
    assert rows[0]["reward"] == pytest.approx(4 / 12)
