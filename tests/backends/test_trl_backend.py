"""What the TRL backend itself does (backends/trl_backend.py), on TRL's real trainers: our rollout settings become TRL's
colocated vLLM, TRL renders our prompts (one user turn, `enable_thinking` as configured), GRPO's reward grades each
completion against its own problem and the grader's timeouts reach metrics.jsonl, and the warmup's teacher rollouts are
cached beside the stage's model, readable, read back instead of sampled again, and sampled again when the cache is old.
Losses and gradients against the torch backend's are test_parity.py's."""

import copy
import json
from dataclasses import replace

import pytest
import torch

pytest.importorskip("trl")

from conftest import QWEN3_LIKE  # noqa: E402

from s2d_bench.backends import BACKENDS, trl_backend  # noqa: E402
from s2d_bench.backends.trl_backend import trl_args  # noqa: E402
from s2d_bench.config import DistillConfig, GRPOConfig, PromptConfig, RolloutConfig, TaskConfig, load_config  # noqa: E402
from s2d_bench.generation.protocol import completion_texts, render, render_texts  # noqa: E402
from s2d_bench.harness.rewards import Scores  # noqa: E402
from s2d_bench.models.builders import tiny_qwen3_student  # noqa: E402
from s2d_bench.stages import STAGES, StageInputs  # noqa: E402
from s2d_bench.tasks import TASKS  # noqa: E402


def _weights(model) -> torch.Tensor:  # noqa: ANN001
    return torch.cat([p.detach().flatten() for p in model.parameters()])


COMMON = dict(lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=0.5, logging_steps=1,
              save_strategy="no", report_to=[], seed=9, bf16=False, use_cpu=True, gradient_checkpointing=True,
              remove_unused_columns=False, temperature=0.7, disable_tqdm=False, per_device_train_batch_size=2)
STAGE = dict(lr=3e-5, temperature=0.7, max_new_tokens=77, max_grad_norm=0.5, micro_batch_size=2, gradient_checkpointing=True)
TRANSLATED = {  # every setting unlike its default, so a setting TRL would take from elsewhere shows
    "grpo": (GRPOConfig(steps=3, prompts_per_step=4, samples_per_prompt=4, clip_low=0.1, clip_high=0.3, kl_coef=0.05,
                        scale_rewards=False, updates_per_batch=2, mini_batches=2, **STAGE),
             dict(max_steps=12, learning_rate=3e-5, gradient_accumulation_steps=4, steps_per_generation=8, num_generations=4,
                  num_iterations=2, max_completion_length=77, epsilon=0.1, epsilon_high=0.3, beta=0.05, scale_rewards="none",
                  loss_type="dapo", top_k=0, top_p=1.0, chat_template_kwargs={"enable_thinking": True})),
    "forward_kl": (DistillConfig(steps=3, batch_size=8, **STAGE),
                   dict(max_steps=3, learning_rate=3e-5, gradient_accumulation_steps=4, lmbda=0.0, beta=0.0, seq_kd=False,
                        train_sampling_strategy="sequential", max_new_tokens=77, dataset_kwargs={"skip_prepare_dataset": True})),
    "reverse_kl": (DistillConfig(steps=3, batch_size=8, **STAGE),
                   dict(max_steps=3, learning_rate=3e-5, gradient_accumulation_steps=4, beta=1.0, max_completion_length=77,
                        top_k=0, top_p=1.0, chat_template_kwargs={"enable_thinking": True})),
}


@pytest.mark.parametrize("kind", list(TRANSLATED))
def test_a_stages_settings_are_its_trl_trainers_setting_for_setting(kind, tmp_path):
    """What makes TRL run our algorithm (schedule, clipping, batch shape, GRPO's clip range, KL and reward scaling, GKD's
    forward KL on our rollouts in our order, the sampling), each written out even where TRL's default agrees today."""
    from transformers.utils import logging as hf_logging

    cfg, own = TRANSLATED[kind]
    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # transformers hides the progress bar at a quiet log level unless told not to
    try:
        args = trl_args(kind, cfg, 9, "cpu", str(tmp_path), prompt=PromptConfig(thinking=True))
    finally:
        hf_logging.set_verbosity(before)
    expected = {"output_dir": str(tmp_path), **COMMON, **own}
    assert {name: getattr(args, name) for name in expected} == expected
    assert not trl_args(kind, cfg, 9, "cuda", str(tmp_path)).use_cpu
    assert not trl_args(kind, replace(cfg, gradient_checkpointing=False), 9, "cpu", str(tmp_path)).gradient_checkpointing  # TRL's default: on
    if kind == "grpo":
        assert trl_args(kind, replace(cfg, scale_rewards=True), 9, "cpu", str(tmp_path)).scale_rewards == "group"


@pytest.mark.parametrize("kind, cfg", [("grpo", GRPOConfig()), ("reverse_kl", DistillConfig())], ids=["grpo", "opd"])
def test_rollout_engine_vllm_is_trls_colocated_vllm_with_our_settings(kind, cfg, tmp_path):
    vllm = RolloutConfig(engine="vllm", gpu_memory_utilization=0.35, sleep=True, max_model_len=2048)
    args = trl_args(kind, cfg, 0, "cpu", str(tmp_path), vllm)
    assert (args.use_vllm, args.vllm_mode, args.vllm_gpu_memory_utilization, args.vllm_enable_sleep_mode,
            args.vllm_max_model_length) == (True, "colocate", 0.35, True, 2048)
    assert trl_args(kind, cfg, 0, "cpu", str(tmp_path), RolloutConfig(engine="vllm")).vllm_max_model_length is None  # 0: the model's
    assert not trl_args(kind, cfg, 0, "cpu", str(tmp_path)).use_vllm
    if kind == "grpo":  # ratios against the trained model's own log-probs, never vLLM's: no importance-sampling correction
        assert args.vllm_importance_sampling_correction is False
    with pytest.raises(ValueError, match="no TRL trainer for 'kl'"):
        trl_args("kl", cfg, 0, "cpu", str(tmp_path))


@pytest.mark.parametrize("thinking", [False, True], ids=["non-thinking", "thinking"])
@pytest.mark.parametrize("stage", ["teacher_rl", "opd"])
def test_trl_trains_our_rendered_prompts_and_grpo_grades_each_completion_against_its_problem(stage, thinking, monkeypatch,
                                                                                             tmp_path):
    """The prompts TRL trains on are `protocol.render`'s for the stage's problems (a Qwen3-style template, which shows
    the role and the thinking mode); GRPO's reward gets each completion's own problem, k in a row, and each step's
    grading timeouts are logged; nothing is written outside the backend's own temporary folder."""
    import trl

    splits = TASKS.get("add3mix")(TaskConfig(n_labeled=4, n_unlabeled=4, n_test=2)).splits()
    student, tok = tiny_qwen3_student(seed=0)
    teacher, _ = tiny_qwen3_student(seed=1)
    tok.chat_template = QWEN3_LIKE
    cfg = load_config(None, ["backend=trl", f"prompt.thinking={str(thinking).lower()}", "stages.teacher_rl.steps=2",
                             "stages.teacher_rl.prompts_per_step=2", "stages.teacher_rl.samples_per_prompt=2",
                             "stages.teacher_rl.max_new_tokens=4", "stages.opd.steps=1", "stages.opd.batch_size=2",
                             "stages.opd.max_new_tokens=4"])
    trainer_cls = trl.GRPOTrainer if stage == "teacher_rl" else trl.DistillationTrainer
    real_loss, trained = trainer_cls._compute_loss, set()

    def spy(self, model, inputs, *rest):  # noqa: ANN001
        trained.update(tuple(ids[m.bool()].tolist()) for ids, m in zip(inputs["prompt_ids"], inputs["prompt_mask"]))
        return real_loss(self, model, inputs, *rest)

    monkeypatch.setattr(trainer_cls, "_compute_loss", spy)
    graded, rows = [], []

    def reward(texts, problems):  # noqa: ANN001
        graded.append(problems)
        return Scores([0.0, 1.0] * (len(texts) // 2), timeouts=len(graded))

    monkeypatch.chdir(tmp_path)
    policy = teacher if stage == "teacher_rl" else student
    STAGES.get(stage).run(StageInputs(BACKENDS.get("trl")(cfg), policy, teacher, tok, splits, reward,
                                      getattr(cfg.stages, stage), 0, rows.append))
    assert list(tmp_path.iterdir()) == []
    if stage == "opd":
        assert trained <= {tuple(r) for r in render(tok, [p.prompt for p in splits.unlabeled], thinking)} and len(trained) >= 2
        return
    problems = [p for batch in graded for p in batch]
    assert len(graded) == 2 and all(p in splits.labeled for p in problems) and problems[::2] == problems[1::2]
    assert trained == {tuple(r) for r in render(tok, [p.prompt for p in problems], thinking)}
    assert [(row["step"], row["grading_timeouts"]) for row in rows] == [(0, 1.0), (1, 2.0)]  # each step's own


def test_a_trl_warmups_teacher_rollouts_are_cached_readable_read_back_and_sampled_again_when_old(monkeypatch, tmp_path):
    splits = TASKS.get("add3mix")(TaskConfig(n_labeled=4, n_unlabeled=8, n_test=2)).splits()
    student, tok = tiny_qwen3_student(seed=0)
    teacher, _ = tiny_qwen3_student(seed=1)
    tok.chat_template = QWEN3_LIKE  # non-thinking prompts that differ from thinking ones
    cfg = load_config(None, ["backend=trl", "stages.warmup.steps=2", "stages.warmup.batch_size=2", "stages.warmup.max_new_tokens=5"])
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (tmp_path / "warmup").mkdir()
    monkeypatch.chdir(elsewhere)  # nothing is written outside the stage's folder and the backend's temporary one

    def warmup() -> torch.Tensor:
        trained = copy.deepcopy(student)
        STAGES.get("warmup").run(StageInputs(BACKENDS.get("trl")(cfg), trained, teacher, tok, splits, None, cfg.stages.warmup,
                                             0, lambda row: None, workdir=str(tmp_path / "warmup")))
        assert list(elsewhere.iterdir()) == []
        return _weights(trained)

    first = warmup()
    cache = tmp_path / "warmup" / "teacher_rollouts.jsonl"
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # written whole: no partial file left
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(rows) == 4 and {r["problem"] for r in rows} <= {p.prompt for p in splits.unlabeled}
    for r in rows:  # each row as a person reads it: the problem, its rendered prompt, the teacher's reply
        assert r["prompt"] == render_texts(tok, [r["problem"]], False)[0] and r["prompt_ids"] == render(tok, [r["problem"]], False)[0]
        assert r["completion"] == completion_texts(tok, [r["completion_ids"]])[0]

    real = trl_backend.open_rollouts
    monkeypatch.setattr(trl_backend, "open_rollouts", lambda *args, **kwargs: pytest.fail("sampled again"))
    assert torch.equal(warmup(), first)

    monkeypatch.setattr(trl_backend, "open_rollouts", real)
    cache.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "completion_ids"}) + "\n" for r in rows))
    assert torch.equal(warmup(), first)  # a cache from before token ids were kept: the same rollouts sampled again
    assert [json.loads(line) for line in cache.read_text().splitlines()] == rows


def test_a_finished_trainers_colocated_vllm_is_shut_down_and_its_memory_freed(fake_vllm, tmp_path):
    """GRPO's and Distillation's trainers hold their colocated engine at `vllm_generation.llm` (TRL's own layout) until
    collected, and sleep mode allows one engine a process: released, the engine is shut down and dropped, the trainer's
    memory freed, and the next stage's engine starts. A trainer without vLLM has only its memory freed."""
    from types import SimpleNamespace

    model, tok = tiny_qwen3_student(seed=0)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    freed = []
    accelerator = SimpleNamespace(free_memory=lambda: freed.append(True))
    llm = fake_vllm.LLM(model=str(tmp_path), enable_sleep_mode=True)
    trainer = SimpleNamespace(vllm_generation=SimpleNamespace(llm=llm), accelerator=accelerator)
    trl_backend._release(trainer)
    assert not llm.llm_engine.engine_core.alive and trainer.vllm_generation.llm is None and freed == [True]
    fake_vllm.LLM(model=str(tmp_path), enable_sleep_mode=True).llm_engine.engine_core.shutdown()  # the next one starts
    trl_backend._release(SimpleNamespace(accelerator=accelerator))
    assert freed == [True, True]


def test_a_trl_run_loads_a_nodes_model_as_saved_with_a_tokenizer_for_sampling(tmp_path):
    model, tok = tiny_qwen3_student(seed=0)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = BACKENDS.get("trl")(load_config(None, ["backend=trl"])).load(str(tmp_path), trained=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert loaded.dtype == torch.float32 and loaded_tok.padding_side == "left" and loaded_tok("7+8=")["input_ids"] == tok("7+8=")["input_ids"]
