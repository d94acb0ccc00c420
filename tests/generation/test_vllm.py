"""The vllm engine: training loops sample with a vLLM copy whose weights follow the trainer; evaluation loads a path.

vLLM needs a GPU build that cannot be installed here, so these tests run against tests/fakes/vllm,
the stand-in made from the real package's API manifest (test_vllm_manifest.py). It samples with the
s2d-bench sampler from whatever weights were pushed into it, one stream per sample seeded as
vLLM seeds it, and refuses to sample from weights that were never pushed or were dropped by
sleep. The reference is the hf engine seeding the same way (`vllm.seeded_as_vllm`): same streams
and same weights mean the same tokens, so "vllm" must train exactly as that does.
"""

import gc
import importlib.util
from pathlib import Path

import pytest
import torch

from s2d_bench.backends import BACKENDS
from s2d_bench.config import GRPOConfig, RolloutConfig, TaskConfig, load_config
from s2d_bench.preflight import check_config
from s2d_bench.errors import UserError
from s2d_bench.harness.rewards import Scores
from s2d_bench.models.builders import tiny_qwen3_student
from s2d_bench.stages import STAGES, StageInputs
from s2d_bench.tasks import TASKS

STEPS = {"teacher_rl": "stages.teacher_rl.steps=3", "warmup": "stages.warmup.steps=3", "opd": "stages.opd.steps=3",
         "student_rl": "stages.student_rl.steps=3"}


def _reference(fake_vllm, stage: str, backend: str = "torch"):
    """The same stage on the hf engine, each sample from its own stream seeded as vLLM seeds it."""
    with fake_vllm.seeded_as_vllm():
        return _run(stage, backend)


def _run(stage: str, backend: str = "torch", *overrides: str):
    """Run `stage` on fresh tiny models; return the trained model and its weights after each step."""
    cfg = load_config(None, [STEPS[stage], "stages.teacher_rl.prompts_per_step=4", "stages.student_rl.prompts_per_step=4",
                             "stages.warmup.batch_size=8", "stages.opd.batch_size=8",
                             "teacher_process=false", *overrides])  # the fake engine lives in this process
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
    model_hf, _, rows_hf, _ = _reference(fake_vllm, stage)
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


def test_trl_backend_turns_on_trls_own_colocated_vllm():
    trl_backend = pytest.importorskip("s2d_bench.backends.trl_backend")
    from s2d_bench.config import DistillConfig

    rollout = RolloutConfig(engine="vllm", gpu_memory_utilization=0.4, max_model_len=1024)
    grpo = trl_backend.trl_args("grpo", GRPOConfig(), 0, "cpu", "/tmp/x", rollout)
    opd = trl_backend.trl_args("reverse_kl", DistillConfig(), 0, "cpu", "/tmp/x", rollout)
    for args in (grpo, opd):
        assert (args.use_vllm, args.vllm_mode, args.vllm_gpu_memory_utilization, args.vllm_max_model_length) == (True, "colocate", 0.4, 1024)
    assert grpo.vllm_importance_sampling_correction is False  # ratios against the trained model, as ours
    assert not trl_backend.trl_args("grpo", GRPOConfig(), 0, "cpu", "/tmp/x").use_vllm


def _pretend_gpu(monkeypatch, fake_vllm, free: int, total: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (free, total))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(fake_vllm, "DEVICE_MEMORY", (free, total))


@pytest.mark.parametrize("case, free, util, max_len, fix", [
    ("weights", 1.0, 0.4, 64, "rollout.engine=hf"),
    ("busy", 0.5, 0.6, 64, "lower it to at most 0.50"),
    ("kv cache", 1.0, 0.6, 4096, r"set rollout.max_model_len <= [\d,]+ .*or raise rollout.gpu_memory_utilization"),
])
def test_what_vllm_would_refuse_at_start_is_refused_first_with_the_setting_to_change(fake_vllm, monkeypatch, case, free, util, max_len, fix):
    """vLLM refuses to start (after loading) when free memory is below its share, and when the KV cache left after
    the weights cannot hold one max_model_len sequence; a whole copy per GPU must fit its share. Each is refused
    before the engine starts, naming the setting; with room, the stand-in's own start check passes too."""
    from s2d_bench import budget
    from s2d_bench.generation.engine import open_rollouts

    model, tok = tiny_qwen3_student(seed=0)
    weights = sum(p.numel() for p in model.parameters()) * 4
    kv = budget.Shape.of(model.config).kv_bytes(4)
    total = int(2 * weights + 200 * kv)  # at 0.6: the weights and a few hundred positions of KV cache; at 0.4 not the weights
    _pretend_gpu(monkeypatch, fake_vllm, int(free * total), total)
    with pytest.raises(UserError, match=fix):
        with open_rollouts(RolloutConfig(engine="vllm", gpu_memory_utilization=util, max_model_len=max_len), model, tok, False, trained=True):
            pass
    assert not fake_vllm.INSTANCES
    _pretend_gpu(monkeypatch, fake_vllm, total, total)
    with open_rollouts(RolloutConfig(engine="vllm", gpu_memory_utilization=0.6, max_model_len=64), model, tok, False, trained=True):
        pass
    assert len(fake_vllm.INSTANCES) == 1


def test_trl_backend_samples_the_warmups_teacher_rollouts_with_vllm(fake_vllm):
    pytest.importorskip("trl")
    model_hf, _, rows_hf, _ = _reference(fake_vllm, "warmup", "trl")
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


@pytest.mark.parametrize("dropped, named", [
    ("model.layers.1.input_layernorm.weight", r"left 1 parameter\(s\) unwritten.*model.layers.1.input_layernorm.weight"),
    ("model.layers.1.mlp.up_proj.weight", r"model.layers.1.mlp.gate_up_proj.weight \(up_proj shard\)"),
    ("model.layers.0.self_attn.k_proj.weight", r"model.layers.0.self_attn.qkv_proj.weight \(k_proj shard\)"),
])
def test_a_push_that_leaves_a_parameter_or_a_shard_unwritten_fails_naming_it(fake_vllm, monkeypatch, dropped, named):
    """vLLM's loader maps names onto fused layers (qkv_proj, gate_up_proj) and reports the vLLM names it wrote,
    a fused one as soon as any shard was; a parameter or shard it never wrote would keep its dummy values, so the
    push fails naming it instead of sampling from noise."""
    from s2d_bench.generation.sampling import Sampling
    from s2d_bench.generation.vllm import VLLMEngine

    model, tok = tiny_qwen3_student(seed=0)
    engine = VLLMEngine.live(model, tok, RolloutConfig(engine="vllm", sleep=False), thinking=False, trained=True)
    every = type(model).named_parameters  # the trainer's model lacks one of vLLM's checkpoint names
    monkeypatch.setattr(model, "named_parameters", lambda *a, **kw: ((n, p) for n, p in every(model, *a, **kw) if n != dropped))
    with pytest.raises(RuntimeError, match=named):
        engine.rollouts(["1+1="], Sampling(k=2, max_new_tokens=4), [0])
    engine.close()


def test_engines_are_shut_down_so_the_next_stage_can_start_one(fake_vllm):
    """Sleep mode allows one engine a process, and a start freezes the collector: an engine closed by the
    engine (or released with a TRL trainer) is shut down, so the next one starts; one left running is refused."""
    from s2d_bench.generation.vllm import VLLMEngine, shutdown

    model, tok = tiny_qwen3_student(seed=0)
    cfg = RolloutConfig(engine="vllm", sleep=True)
    first = VLLMEngine.live(model, tok, cfg, thinking=False, trained=True)
    with pytest.raises(RuntimeError, match="sleep-mode engine is still alive"):
        fake_vllm.LLM(model="x", enable_sleep_mode=True)
    first.close()
    second = VLLMEngine.live(model, tok, cfg, thinking=False, trained=False)  # starts: the first was shut down
    assert not fake_vllm.INSTANCES[0].llm_engine.engine_core.alive and fake_vllm.INSTANCES[1].llm_engine.engine_core.alive
    shutdown(second.llm)
    assert gc.get_freeze_count() == 0  # shutdown undid the start's freeze


def test_the_engine_folder_carries_the_generation_layers_stop_set(fake_vllm):
    """vLLM adds generation_config.json's EOS ids (else config.json's) to every request's stops: the copy's folder
    gets the generation layer's stop set, so vLLM's additions are ours."""
    from s2d_bench.generation.protocol import stop_ids
    from s2d_bench.generation.vllm import VLLMEngine

    model, tok = tiny_qwen3_student(seed=0)
    engine = VLLMEngine.live(model, tok, RolloutConfig(engine="vllm"), thinking=False, trained=True)
    assert sorted(fake_vllm.INSTANCES[0].eos_ids) == sorted(stop_ids(model, tok)) == sorted(engine.stops)
    engine.close()


@pytest.mark.parametrize("temperature", [1.0, 0.0], ids=["sampled", "greedy"])
def test_evaluation_through_the_vllm_engine_scores_as_the_hf_engine(fake_vllm, tmp_path, temperature):
    """`s2d-bench eval --engine vllm`: the checkpoint loaded by path, one SamplingParams per problem with its own
    seed (greedy: one sample, repeated k times), our stop set and tokenizer; the stand-in samples each request
    with the s2d-bench sampler, one stream per sample, so every per-problem score equals the hf engine's seeded so."""
    import json

    from s2d_bench.generation.engine import EngineConfig
    from s2d_bench.harness.suite import SuiteOptions, run_suite
    from s2d_bench.models.builders import save

    model, tok = tiny_qwen3_student(seed=3)
    save(model, tok, tmp_path / "model")
    rows = [{"id": f"q{i}", "problem": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(5)]
    (tmp_path / "math500.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    opts = SuiteOptions(samples=3, temperature=temperature, max_new_tokens=6, data=str(tmp_path))
    with fake_vllm.seeded_as_vllm():
        hf = run_suite(str(tmp_path / "model"), ["math500"], "hf", EngineConfig(device="cpu", prompts_per_batch=2), opts, tmp_path / "hf")[0][0]
    vllm = run_suite(str(tmp_path / "model"), ["math500"], "vllm", EngineConfig(device="cpu", prompts_per_batch=2), opts, tmp_path / "vllm")[0][0]
    records = {"hf": hf, "vllm": vllm}
    completions = {e: [json.loads(x)["text"] for x in next((tmp_path / e).glob("*/math500/completions.jsonl")).read_text().splitlines()]
                   for e in records}
    assert completions["vllm"] == completions["hf"]
    assert records["vllm"]["per_problem"] == records["hf"]["per_problem"]
    (llm,) = fake_vllm.INSTANCES
    assert [p.n for p in llm.params_at_generate[0]] == [1 if temperature == 0 else 3] * 5
    assert len({p.seed for p in llm.params_at_generate[0]}) == 5  # one seed per problem


def test_a_finished_trl_trainer_releases_its_colocated_engine(fake_vllm, tmp_path):
    """TRL's GRPO and distillation trainers hold their colocated vLLM engine until collected, and the engine's start
    froze the collector: the backend shuts it down after each stage, so the next stage's engine can start."""
    trl_backend = pytest.importorskip("s2d_bench.backends.trl_backend")
    from types import SimpleNamespace

    from s2d_bench.models.builders import save

    save(*tiny_qwen3_student(seed=0), tmp_path)
    llm = fake_vllm.LLM(model=str(tmp_path), enable_sleep_mode=True)
    freed = []
    trainer = SimpleNamespace(vllm_generation=SimpleNamespace(llm=llm), accelerator=SimpleNamespace(free_memory=lambda: freed.append(1)))
    trl_backend._release(trainer)
    assert not llm.llm_engine.engine_core.alive and trainer.vllm_generation.llm is None and freed
    fake_vllm.LLM(model=str(tmp_path), enable_sleep_mode=True).llm_engine.engine_core.shutdown()  # the next one starts
