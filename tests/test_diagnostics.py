import json

import pytest
import torch

from s2d_bench.config import DiagnosticsConfig, DistillConfig
from s2d_bench.diagnostics import c2, reward_gain
from s2d_bench.models import MODELS


def test_c2_is_zero_for_a_student_equal_to_its_teacher_and_positive_otherwise():
    teacher, tok = MODELS.get("tiny-qwen3-student")(seed=0)
    same, _ = MODELS.get("tiny-qwen3-student")(seed=0)
    other, _ = MODELS.get("tiny-qwen3-student")(seed=1)
    loaded = []
    students = [(when, lambda m=m, when=when: loaded.append(when) or m) for when, m in (("before", other), ("after", same))]
    record = c2(teacher, students, tok, ["1+2=", "33+4=", "5+5="], max_new_tokens=6, seed=0, thinking=False, top_k=0,
                settings=DiagnosticsConfig(c2_prompts=2))
    assert record["kl_forward_after"] == pytest.approx(0.0, abs=1e-6)
    assert record["kl_reverse_after"] == pytest.approx(0.0, abs=1e-6)
    assert record["kl_forward_before"] > 1e-3 and record["kl_reverse_before"] > 1e-3
    assert (record["prompts"], record["samples_per_prompt"], loaded) == (2, 4, ["before", "after"])


def _full_logit_kl(teacher, student, tok, prompts, max_new_tokens, seed, k):
    """C2 as it was first written: every prompt in one batch, full-vocabulary logits of the whole batch."""
    from s2d_bench import losses
    from s2d_bench.generation.engine import EngineConfig
    from s2d_bench.generation.hf import HFEngine
    from s2d_bench.generation.protocol import prompt_seeds
    from s2d_bench.generation.sampling import Sampling
    from s2d_bench.models.sequences import completion_logits

    out = {}
    for name, sampler, kl in (("kl_forward", teacher, losses.forward_kl), ("kl_reverse", student, losses.reverse_kl)):
        engine = HFEngine(sampler, tok, EngineConfig(prompts_per_batch=0))
        batch = engine.rollouts(prompts, Sampling(k=k, temperature=1.0, max_new_tokens=max_new_tokens), prompt_seeds(seed, len(prompts))).batch
        with torch.no_grad():
            out[name] = float(kl(completion_logits(student, batch), completion_logits(teacher, batch), batch.completion_mask))
    return out


def test_c2_in_bounded_batches_and_chunks_gives_the_full_logit_numbers():
    """One prompt a sampling batch (a one-token KV budget) and 3 positions a head call: the same token-mean KLs as the
    whole batch scored from full logits, since every prompt samples from its own seed and each token's KL is exact."""
    from s2d_bench.diagnostics import kl_both_ways
    from s2d_bench.generation.engine import EngineConfig

    teacher, tok = MODELS.get("tiny-qwen3-teacher")(seed=3)
    student, _ = MODELS.get("tiny-qwen3-student")(seed=4)
    prompts = ["1+2=", "33+4=", "250+250=", "7+70="]
    reference = _full_logit_kl(teacher, student, tok, prompts, 9, 5, 3)
    bounded = kl_both_ways(teacher, student, tok, prompts, 9, 5, settings=DiagnosticsConfig(c2_samples=3, chunk_size=3),
                           batching=EngineConfig(prompts_per_batch=0, max_batch_tokens=1))
    assert bounded == pytest.approx(reference, rel=1e-5) and min(reference.values()) > 1e-3


def test_reward_gain_compares_the_last_tenth_of_training_with_the_first(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": i, "reward": 0.1 if i < 10 else 0.6}) + "\n" for i in range(100)))
    assert reward_gain(path) == pytest.approx({"reward_first": 0.1, "reward_last": 0.6, "reward_gain": 0.5})
    assert reward_gain(tmp_path / "missing.jsonl") is None
    path.write_text("".join(json.dumps({"step": i, "reward": float(i)}) + "\n" for i in range(100)))  # the means of steps 0-9, 90-99
    assert reward_gain(path) == pytest.approx({"reward_first": 4.5, "reward_last": 94.5, "reward_gain": 90.0})
    path.write_text("".join(json.dumps({"step": i, "reward": float(i)}) + "\n" for i in range(5)))  # under ten steps: one each
    assert reward_gain(path) == pytest.approx({"reward_first": 0.0, "reward_last": 4.0, "reward_gain": 4.0})


def test_c1_after_teacher_rl_is_its_reward_gain_computed_once_and_other_stages_have_none(tmp_path):
    """C1 is the teacher-RL node's own reward gain, from its metrics and no model, written once and kept; a node without
    rewards logged has a C1 without figures; RL on the student, and base models, have no diagnostics."""
    from types import SimpleNamespace

    from s2d_bench.diagnostics import of_node

    def load(node_id):
        raise AssertionError(f"C1 loads no model ({node_id})")

    args = (["1+2="], 4, 0, False, DiagnosticsConfig())
    log = tmp_path / "rl" / "metrics.jsonl"
    log.parent.mkdir()
    log.write_text("".join(json.dumps({"step": i, "reward": 0.2 if i < 2 else 0.7}) + "\n" for i in range(20)))
    node = SimpleNamespace(id="teacher_rl-1", stage="teacher_rl")
    c1 = of_node(node, log.parent, load, *args)
    assert c1 == {"kind": "c1", **reward_gain(log)} and c1["reward_gain"] == pytest.approx(0.5)
    assert json.loads((log.parent / "diagnostics.json").read_text()) == c1
    log.write_text(json.dumps({"step": 0, "reward": 1.0}) + "\n")
    assert of_node(node, log.parent, load, *args) == c1  # computed once
    (tmp_path / "quiet").mkdir()
    assert of_node(node, tmp_path / "quiet", load, *args) == {"kind": "c1"}
    for stage in ("student_rl", "base"):
        (tmp_path / stage).mkdir()
        assert of_node(SimpleNamespace(id=stage, stage=stage), tmp_path / stage, load, *args) is None
        assert not (tmp_path / stage / "diagnostics.json").exists()


def test_a_distillation_nodes_c2_is_measured_as_it_is_asked(tmp_path, monkeypatch):
    """of_node hands C2 the teacher, the parent (before) and the node (after), and the prompts, token budget, seed, prompt
    mode, the stage's top-k, settings and batches it was given (c2's own test shows each of them moves the numbers)."""
    from types import SimpleNamespace

    from s2d_bench import diagnostics
    from s2d_bench.generation.engine import EngineConfig

    asked = []
    monkeypatch.setattr(diagnostics, "c2", lambda *args: asked.append(args) or {"kl_forward_after": 0.5})
    models = {"t": "teacher-model", "w": "warmup-model", "o": "opd-model"}
    node = SimpleNamespace(id="o", stage="opd", parent="w", teacher="t", settings=DistillConfig(top_k=7))
    settings, batching = DiagnosticsConfig(c2_prompts=2, c2_samples=3), EngineConfig(prompts_per_batch=2)
    record = diagnostics.of_node(node, tmp_path, lambda i: (models[i], "tok"), ["a", "b", "c"], 9, 41, True, settings, batching)
    assert record == {"kind": "c2", "kl_forward_after": 0.5}
    (teacher, students, tok, *rest), = asked
    assert (teacher, tok, rest) == ("teacher-model", "tok", [["a", "b", "c"], 9, 41, True, 7, settings, batching])
    assert [(when, student()) for when, student in students] == [("before", "warmup-model"), ("after", "opd-model")]


def test_a_node_c2_record_is_kept_until_its_counts_change(tmp_path):
    from types import SimpleNamespace

    from s2d_bench.diagnostics import of_node

    model, tok = MODELS.get("tiny-qwen3-student")(seed=0)
    loads = []
    load = lambda i: loads.append(i) or (model, tok)  # noqa: E731 - a built node's model, here one for every id
    node = SimpleNamespace(id="opd-1", stage="opd", parent="warmup-1", teacher="teacher_rl-1", settings=DistillConfig())
    prompts = ["1+2=", "3+4=", "5+6="]
    first = of_node(node, tmp_path, load, prompts, 4, 0, False, DiagnosticsConfig(c2_prompts=2, c2_samples=2))
    assert (first["kind"], first["prompts"], first["samples_per_prompt"]) == ("c2", 2, 2) and loads == ["teacher_rl-1", "warmup-1", "opd-1"]
    assert of_node(node, tmp_path, load, prompts, 4, 0, False, DiagnosticsConfig(c2_prompts=2, c2_samples=2)) == first
    assert len(loads) == 3  # kept: nothing loaded again
    again = of_node(node, tmp_path, load, prompts, 4, 0, False, DiagnosticsConfig(c2_prompts=5, c2_samples=2))
    assert again["prompts"] == 3 and len(loads) == 6  # more prompts asked (3 exist): measured again
    assert of_node(node, tmp_path, load, prompts, 4, 0, False, DiagnosticsConfig(c2_prompts=9, c2_samples=2)) == again  # still 3


def test_c2_measures_with_the_runs_seed_prompt_mode_and_batches(monkeypatch):
    """On the real Qwen vocabulary, whose chat template renders a thinking prompt apart from a non-thinking one: C2's
    numbers are `kl_both_ways`' with the seed and prompt mode it is given, and each changes them; it samples in the batches
    it is given."""
    from s2d_bench.diagnostics import kl_both_ways
    from s2d_bench.generation.engine import EngineConfig
    from s2d_bench.generation.hf import HFEngine

    teacher, tok = MODELS.get("tiny-qwen3-bpe-151936")(seed=0)
    student, _ = MODELS.get("tiny-qwen3-bpe-151936")(seed=1)
    prompts, settings = ["What is 1+2?", "What is 33+4?"], DiagnosticsConfig(c2_samples=1)
    sampled, rollouts = [], HFEngine.rollouts
    monkeypatch.setattr(HFEngine, "rollouts", lambda self, mine, *rest: sampled.append(len(mine)) or rollouts(self, mine, *rest))
    measured = {(seed, thinking): c2(teacher, [("after", lambda: student)], tok, prompts, 3, seed, thinking, 0, settings,
                                     EngineConfig(prompts_per_batch=1))  # evaluation's batches: a prompt at a time
                for seed, thinking in ((5, True), (5, False), (6, True))}
    assert sampled == [1] * 12  # 3 records x 2 directions x 2 prompts
    monkeypatch.undo()
    for (seed, thinking), record in measured.items():
        exact = kl_both_ways(teacher, student, tok, prompts, 3, seed, thinking, settings)  # in one batch: the same tokens
        assert {k: record[f"{k}_after"] for k in exact} == pytest.approx(exact, rel=1e-4)
    kls = [tuple(r[k] for k in ("kl_forward_after", "kl_reverse_after")) for r in measured.values()]
    assert len(set(kls)) == 3
