"""The vllm engine: training loops sample with a vLLM copy whose weights follow the trainer; evaluation loads a path.

vLLM needs a GPU build that cannot be installed here, so these tests run against tests/fakes/vllm,
which samples with the s2d-bench sampler from whatever weights were pushed into it and refuses
to sample from weights that were never pushed or were dropped by sleep. Same seed and same
weights then mean the same tokens, so "vllm" must train exactly as "hf" does.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from s2d_bench.backends import BACKENDS
from s2d_bench.config import GRPOConfig, RolloutConfig, TaskConfig, load_config
from s2d_bench.preflight import check_config
from s2d_bench.errors import UserError
from s2d_bench.harness.rewards import Scores
from s2d_bench.models.builders import tiny_qwen3_student
from s2d_bench.pipeline import plan
from s2d_bench.stages import STAGES, StageInputs
from s2d_bench.tasks import TASKS

FAKES = Path(__file__).resolve().parent.parent / "fakes"
MODULES = ("vllm", "s2d_bench.generation.vllm")  # all that import vllm
STEPS = {"teacher_rl": "stages.teacher_rl.steps=3", "warmup": "stages.warmup.steps=3", "opd": "stages.opd.steps=3",
         "student_rl": "stages.student_rl.steps=3"}


@pytest.fixture
def fake_vllm(monkeypatch):
    env = dict(os.environ)
    monkeypatch.syspath_prepend(str(FAKES))
    for name in MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    import vllm

    vllm.INSTANCES.clear()
    yield vllm
    for name in MODULES:
        sys.modules.pop(name, None)
    os.environ.clear()
    os.environ.update(env)


def _run(stage: str, backend: str = "torch", *overrides: str):
    """Run `stage` on fresh tiny models; return the trained model and its weights after each step."""
    cfg = load_config(None, [STEPS[stage], "stages.teacher_rl.prompts_per_step=4", "stages.student_rl.prompts_per_step=4",
                             "stages.warmup.batch_size=8", "stages.opd.batch_size=8", *overrides])
    runner = BACKENDS.get(backend)(cfg)
    splits = TASKS.get("add3mix")(TaskConfig(n_labeled=16, n_unlabeled=64, n_test=6)).splits()
    model, tok = tiny_qwen3_student(seed=0)
    teacher, _ = tiny_qwen3_student(seed=1)
    after_step: list[dict[str, torch.Tensor]] = []
    rows: list[dict] = []

    def log(row: dict) -> None:
        rows.append(row)
        after_step.append({n: p.detach().clone() for n, p in model.named_parameters()})

    x = StageInputs(runner, model, teacher, tok, splits, parity_reward, getattr(cfg.stages, stage), 0, log)
    STAGES.get(stage).run(x)
    return model, teacher, rows, after_step


def parity_reward(texts, problems) -> Scores:
    """A reward that gives GRPO a signal on untrained tiny models."""
    return Scores([float(len(t) % 2 == 0) for t in texts])


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("stage", ["teacher_rl", "warmup", "opd", "student_rl"])
@pytest.mark.parametrize("sleep", [True, False])
def test_vllm_rollouts_train_exactly_as_the_builtin_sampler(fake_vllm, stage, sleep):
    model_hf, _, rows_hf, _ = _run(stage)
    model_v, teacher, rows_v, after_step = _run(stage, "torch", "rollout.engine=vllm", f"rollout.sleep={sleep}")
    assert rows_v == rows_hf  # rewards, losses, lengths: same rollouts, same steps
    _assert_same(dict(model_v.named_parameters()), dict(model_hf.named_parameters()))

    (llm,) = fake_vllm.INSTANCES
    pushed = llm.weights_at_generate
    assert len(pushed) == 3
    if stage == "warmup":  # the teacher samples: pushed once, kept (on the host) while asleep
        assert llm.events.count("reset_prefix_cache") == 1
        for w in pushed:
            _assert_same(w, dict(teacher.named_parameters()))
    else:  # the policy samples: each rollout sees the weights of every update before it
        assert llm.events.count("reset_prefix_cache") == 3
        _assert_same(pushed[1], after_step[0])
        _assert_same(pushed[2], after_step[1])
        assert not torch.equal(pushed[0]["model.embed_tokens.weight"], pushed[2]["model.embed_tokens.weight"])
    assert (f"sleep{1 if stage == 'warmup' else 2}" in llm.events) == sleep


def test_the_engine_gets_a_dummy_weight_copy_of_the_models_config_and_the_rollout_settings(fake_vllm):
    _run("teacher_rl", "torch", "rollout.engine=vllm", "rollout.gpu_memory_utilization=0.45", "rollout.max_model_len=512",
         "rollout.extra={max_num_seqs: 7}")
    (llm,) = fake_vllm.INSTANCES
    args = llm.kwargs
    assert args["load_format"] == "dummy" and args["distributed_executor_backend"] == "external_launcher"
    assert (args["gpu_memory_utilization"], args["max_model_len"], args["max_num_seqs"]) == (0.45, 512, 7)
    assert not Path(llm.module.config._name_or_path).exists()  # the temporary config folder is gone after the stage


def test_deepspeed_backend_samples_through_vllm_too(fake_vllm):
    pytest.importorskip("deepspeed")
    _, _, rows, after_step = _run("teacher_rl", "deepspeed", "rollout.engine=vllm")
    (llm,) = fake_vllm.INSTANCES
    assert len(rows) == 3 and llm.events.count("reset_prefix_cache") == 3
    _assert_same(llm.weights_at_generate[2], after_step[1])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_installed_the_backend_refuses_before_any_stage():
    cfg = load_config(None, ["rollout.engine=vllm"])  # names only: validates offline
    with pytest.raises(UserError, match=r"pip install 's2d-bench\[vllm\]'"):
        BACKENDS.get("torch")(cfg)


def test_rollout_settings_are_checked_when_loaded():
    with pytest.raises(UserError, match="Did you mean 'vllm'"):
        check_config(load_config(None, ["rollout.engine=vlm"]))
    with pytest.raises(UserError, match="gpu_memory_utilization"):
        load_config(None, ["rollout.gpu_memory_utilization=1.5"])


def test_another_rollout_engine_makes_other_stage_nodes_and_keeps_base_models():
    hf = {n.id for n in plan(load_config(None, []))}
    vllm = {n.id for n in plan(load_config(None, ["rollout.engine=vllm"]))}
    shared = hf & vllm
    assert shared and all(n.startswith("base-") for n in shared)
    assert len(hf - vllm) == len(vllm - hf) > 0


def test_trl_backend_turns_on_trls_own_colocated_vllm():
    trl_backend = pytest.importorskip("s2d_bench.backends.trl_backend")
    from s2d_bench.config import DistillConfig

    rollout = RolloutConfig(engine="vllm", gpu_memory_utilization=0.4, max_model_len=1024)
    grpo = trl_backend.trl_args("grpo", GRPOConfig(), 0, "cpu", "/tmp/x", rollout)
    opd = trl_backend.trl_args("reverse_kl", DistillConfig(), 0, "cpu", "/tmp/x", rollout)
    for args in (grpo, opd):
        assert (args.use_vllm, args.vllm_mode, args.vllm_gpu_memory_utilization, args.vllm_max_model_length) == (True, "colocate", 0.4, 1024)
    assert not trl_backend.trl_args("grpo", GRPOConfig(), 0, "cpu", "/tmp/x").use_vllm


def test_a_model_too_big_for_one_gpus_share_is_refused_with_the_fix(fake_vllm, monkeypatch):
    from s2d_bench.generation.rollouts import open_rollouts

    model, tok = tiny_qwen3_student(seed=0)
    weights = sum(p.numel() for p in model.parameters()) * 4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("P", (), {"total_memory": 2 * weights})())
    with pytest.raises(UserError, match="rollout.engine=hf"):
        with open_rollouts(RolloutConfig(engine="vllm", gpu_memory_utilization=0.4), model, tok, False, trained=True):
            pass
    assert not fake_vllm.INSTANCES
    fits = RolloutConfig(engine="vllm", gpu_memory_utilization=0.6)  # 0.6 x 2 = 1.2 times the weights
    with open_rollouts(fits, model, tok, False, trained=True):
        pass
    assert len(fake_vllm.INSTANCES) == 1


def test_trl_backend_samples_the_warmups_teacher_rollouts_with_vllm(fake_vllm):
    pytest.importorskip("trl")
    model_hf, _, rows_hf, _ = _run("warmup", "trl")
    model_v, _, rows_v, _ = _run("warmup", "trl", "rollout.engine=vllm")
    (llm,) = fake_vllm.INSTANCES
    assert llm.events.count("generate") == 3 and llm.events.count("reset_prefix_cache") == 1
    assert rows_v == rows_hf
    _assert_same(dict(model_v.named_parameters()), dict(model_hf.named_parameters()))


def test_an_engine_start_leaves_the_trainers_random_generators_as_they_were(fake_vllm):
    """vLLM reseeds Python's, NumPy's and torch's generators at start (the fake does too): a draw after the
    engine starts is the draw that would have come without it."""
    import random

    import numpy as np

    from s2d_bench.generation.vllm import VLLMEngine

    model, tok = tiny_qwen3_student(seed=0)
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    engine = VLLMEngine.live(model, tok, RolloutConfig(engine="vllm"), thinking=False, trained=True)
    got = (torch.rand(3), random.random(), np.random.rand())
    engine.close()
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)
    assert got[1:] == expected[1:]


def test_a_push_that_leaves_a_parameter_unwritten_fails_naming_it(fake_vllm, monkeypatch):
    """vLLM's loader maps names onto fused layers and reports what it wrote; a parameter it never wrote
    would keep its dummy values, so the push fails with its name instead of sampling from noise."""
    from s2d_bench.generation.sampling import Sampling
    from s2d_bench.generation.vllm import VLLMEngine

    model, tok = tiny_qwen3_student(seed=0)
    real = fake_vllm._Model.load_weights
    monkeypatch.setattr(fake_vllm._Model, "load_weights",
                        lambda self, weights: real(self, ((n, t) for n, t in weights if "layers.1.mlp.up_proj" not in n)))
    engine = VLLMEngine.live(model, tok, RolloutConfig(engine="vllm", sleep=False), thinking=False, trained=True)
    with pytest.raises(RuntimeError, match=r"left 1 parameter\(s\) unwritten.*model.layers.1.mlp.up_proj.weight"):
        engine.rollouts(["1+1="], Sampling(k=2, max_new_tokens=4), [0])
    engine.close()


@pytest.mark.parametrize("temperature", [1.0, 0.0], ids=["sampled", "greedy"])
def test_evaluation_through_the_vllm_engine_scores_as_the_hf_engine(fake_vllm, tmp_path, temperature):
    """`s2d-bench eval --engine vllm`: the checkpoint loaded by path, one SamplingParams per problem with its own
    seed (greedy: one sample, repeated k times), our stop set and tokenizer; the stand-in samples each request
    with the s2d-bench sampler, so every per-problem score equals the hf engine's."""
    import json

    from s2d_bench.generation.engine import EngineConfig
    from s2d_bench.harness.suite import SuiteOptions, run_suite
    from s2d_bench.models.builders import save

    model, tok = tiny_qwen3_student(seed=3)
    save(model, tok, tmp_path / "model")
    rows = [{"id": f"q{i}", "problem": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(5)]
    (tmp_path / "math500.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    opts = SuiteOptions(samples=3, temperature=temperature, max_new_tokens=6, data=str(tmp_path))
    records = {engine: run_suite(str(tmp_path / "model"), ["math500"], engine, EngineConfig(device="cpu", prompts_per_batch=2), opts,
                                 tmp_path / engine)[0] for engine in ("hf", "vllm")}
    completions = {e: [json.loads(x)["text"] for x in (tmp_path / e / "math500" / "completions.jsonl").read_text().splitlines()]
                   for e in records}
    assert completions["vllm"] == completions["hf"]
    assert records["vllm"]["per_problem"] == records["hf"]["per_problem"]
    (llm,) = fake_vllm.INSTANCES
    assert [p.n for p in llm.params_at_generate[0]] == [1 if temperature == 0 else 3] * 5
    assert len({p.seed for p in llm.params_at_generate[0]}) == 5  # one seed per problem
