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


def _forced_stop(model, stops, space, made):  # noqa: ANN001
    """TRL samples with `model.generate`: row 0 of every call is made a reply of one space, stopped, with a
    non-stop token after the stop (what a batch sampler leaves behind a finished row); the rest are cut at the cap
    by the tiny model. The completions as returned are recorded."""
    real = model.generate

    def generate(*args, **kwargs):
        out = real(*args, **kwargs)
        p = kwargs["input_ids"].shape[1]
        if out.shape[1] - p >= 3:
            out[0, p : p + 3] = torch.tensor([space, stops[0], next(t for t in range(out.max() + 1) if t not in stops)])
        made.extend(out[:, p:].tolist())
        return out

    model.generate = generate


@pytest.mark.parametrize("stage", ["teacher_rl", "opd"])
def test_trls_samplers_train_and_grade_exactly_the_ids_they_sampled(stage, monkeypatch):
    """GRPO (stages 1, 3) and Distillation (2b) train what they sampled up to and including the first stop token,
    nothing after it, and nothing appended to a reply cut at the cap (the `<|im_end|>` GKD's text path added);
    GRPO's reward grades the text `completion_texts` decodes from those ids, as every engine's reward does, even
    where TRL's own text differs: with a response template (TRL's Qwen3 one here) TRL parses the reply into fields,
    dropping the reasoning and the whitespace-only reply of row 0."""
    import trl
    from trl.chat_template_utils import qwen3_template

    from s2d_bench.backends import BACKENDS
    from s2d_bench.config import TaskConfig, load_config
    from s2d_bench.generation.protocol import completion_texts, stop_ids
    from s2d_bench.harness.rewards import Scores
    from s2d_bench.stages import STAGES, StageInputs
    from s2d_bench.tasks import TASKS

    splits = TASKS.get("add3mix")(TaskConfig(n_labeled=4, n_unlabeled=4, n_test=2)).splits()
    student, tok = tiny_qwen3_student(seed=0)
    teacher, _ = tiny_qwen3_student(seed=1)
    cfg = load_config(None, ["backend=trl", "stages.teacher_rl.steps=1", "stages.teacher_rl.prompts_per_step=2",
                             "stages.teacher_rl.samples_per_prompt=2", "stages.teacher_rl.max_new_tokens=5",
                             "stages.opd.steps=1", "stages.opd.batch_size=4", "stages.opd.max_new_tokens=5"])
    tok.response_template = qwen3_template  # as checkpoints that ship one (recent Gemma 4) have it
    stops = stop_ids(student, tok)
    made, trained, graded = [], [], []
    _forced_stop(teacher if stage == "teacher_rl" else student, stops, tok.convert_tokens_to_ids(" "), made)
    trainer_cls = trl.GRPOTrainer if stage == "teacher_rl" else trl.DistillationTrainer
    real_loss = trainer_cls._compute_loss

    def spy(self, model, inputs, *rest):  # noqa: ANN001
        trained.extend(ids[m.bool()].tolist() for ids, m in zip(inputs["completion_ids"], inputs["completion_mask"]))
        return real_loss(self, model, inputs, *rest)

    monkeypatch.setattr(trainer_cls, "_compute_loss", spy)

    def reward(texts, problems):  # noqa: ANN001
        graded.extend(texts)
        return Scores([float(i % 2) for i in range(len(texts))])

    policy = teacher if stage == "teacher_rl" else student
    STAGES.get(stage).run(StageInputs(BACKENDS.get("trl")(cfg), policy, teacher, tok, splits, reward,
                                      getattr(cfg.stages, stage), 0, lambda row: None))
    cut = [c[: next((i + 1 for i, t in enumerate(c) if t in stops), len(c))] for c in made]
    assert any(c[-1] in stops for c in cut) and any(c[-1] not in stops for c in cut)  # both kinds were trained
    assert sorted(trained) == sorted(cut)
    if stage == "teacher_rl":
        assert " " in graded and sorted(graded) == sorted(completion_texts(tok, cut))


def test_a_trl_warmup_ends_where_the_torch_warmup_does():
    """Stage 2a on TRL is the torch backend's, step for step: the same teacher rollouts (same seeds, same engine),
    handed to GKD in the order torch trains them (`train_sampling_strategy="sequential"`; GKD's default shuffle
    would put other rows in each step's batch), so three steps leave the same student to float32 rounding."""
    import copy

    from s2d_bench.backends import BACKENDS
    from s2d_bench.config import TaskConfig, load_config
    from s2d_bench.stages import STAGES, StageInputs
    from s2d_bench.tasks import TASKS

    splits = TASKS.get("add3mix")(TaskConfig(n_labeled=4, n_unlabeled=8, n_test=2)).splits()
    student, tok = tiny_qwen3_student(seed=0)
    teacher, _ = tiny_qwen3_student(seed=1)
    start = torch.cat([p.detach().flatten() for p in student.parameters()])
    ends = []
    for backend in ("torch", "trl"):
        cfg = load_config(None, [f"backend={backend}", "stages.warmup.steps=3", "stages.warmup.batch_size=4",
                                 "stages.warmup.max_new_tokens=6"])
        trained = copy.deepcopy(student)
        STAGES.get("warmup").run(StageInputs(BACKENDS.get(backend)(cfg), trained, teacher, tok, splits, None,
                                             cfg.stages.warmup, 0, lambda row: None))
        ends.append(torch.cat([p.detach().flatten() for p in trained.parameters()]))
    ours, theirs = ends
    assert (ours - start).norm() > 0.1  # the student moved
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
