"""The pipeline on tiny budgets: records, shared stages once, resume at stage boundaries."""

import json

import pytest

from s2d_bench.backends.torch_backend import TorchBackend
from s2d_bench.config import load_config
from s2d_bench.pipeline import Runner, plan


def _count_stage_calls(monkeypatch):
    calls = []
    for name in ("teacher_rl", "warmup", "opd", "student_rl"):
        original = getattr(TorchBackend, name)

        def counted(self, job, _original=original, _name=name):
            calls.append(_name)
            return _original(self, job)

        monkeypatch.setattr(TorchBackend, name, counted)
    return calls


def test_plan_shares_common_prefixes_and_separates_different_inputs():
    cfg = load_config(None, ["arms.raw.stages=[warmup, opd]"])
    nodes = plan(cfg)
    stages = [n.stage for n in nodes]
    # base x2, teacher_rl once (bridge and full), warmup/opd twice (RL teacher vs raw teacher),
    # student_rl twice (cold student vs bridged student)
    assert stages.count("base") == 2 and stages.count("teacher_rl") == 1
    assert stages.count("warmup") == 2 and stages.count("opd") == 2 and stages.count("student_rl") == 2
    teacher_rl = next(n for n in nodes if n.stage == "teacher_rl")
    assert sorted(teacher_rl.arms) == ["bridge", "full"]
    # a different seed gives different stage nodes but the same base models
    other = plan(load_config(None, ["seed=1"]))
    assert {n.id for n in other if n.stage == "base"} == {n.id for n in nodes if n.stage == "base"}
    assert not {n.id for n in other if n.stage != "base"} & {n.id for n in nodes}


def test_run_writes_one_record_per_evaluation_and_resumes_without_redoing(tiny_overrides, monkeypatch):
    calls = _count_stage_calls(monkeypatch)
    runner = Runner(load_config(None, tiny_overrides))
    records = runner.run()
    # each distinct stage trained once although bridge and full share three of them
    assert sorted(calls) == ["opd", "student_rl", "student_rl", "teacher_rl", "warmup"]
    assert len(records) == 7  # 2 base + teacher_rl + warmup + opd + 2 x student_rl
    lines = (runner.root / "results.jsonl").read_text().splitlines()
    assert len(lines) == 7
    rec = json.loads(lines[-1])
    for key in ("config_hash", "seed", "git_commit", "versions", "labeled_draws", "n", "k", "mean", "stderr", "eval_seconds"):
        assert key in rec
    by_stage = {(r["stage"], tuple(r["arms"])): r for r in records}
    # labels: teacher_rl drew 2 x 4; the full arm's student adds its own 2 x 4 on top
    assert by_stage[("teacher_rl", ("bridge", "full"))]["labeled_draws"] == 8
    assert by_stage[("opd", ("bridge", "full"))]["labeled_draws"] == 8
    assert by_stage[("student_rl", ("full",))]["labeled_draws"] == 16
    assert by_stage[("student_rl", ("direct-grpo",))]["labeled_draws"] == 8
    metrics = [json.loads(x) for x in (runner.node_dir(runner.nodes[rec["node"]]) / "metrics.jsonl").read_text().splitlines()]
    assert {"reward", "entropy", "response_length", "loss"} <= set(metrics[0])

    calls.clear()
    again = Runner(load_config(None, tiny_overrides)).run()
    assert calls == []
    assert [r["mean"] for r in again] == [r["mean"] for r in records]
    assert len((runner.root / "results.jsonl").read_text().splitlines()) == 7


def test_a_crash_mid_stage_redoes_only_that_stage(tiny_overrides, monkeypatch):
    def crash(self, job):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(TorchBackend, "opd", crash)
    with pytest.raises(KeyboardInterrupt):
        Runner(load_config(None, tiny_overrides)).run()
    monkeypatch.undo()
    calls = _count_stage_calls(monkeypatch)
    runner = Runner(load_config(None, tiny_overrides))
    runner.run()
    assert "teacher_rl" not in calls and "warmup" not in calls
    assert calls.count("opd") == 1
    assert not list(runner.root.glob("nodes/*/model.partial"))


def test_stages_change_parameters_and_the_student_moves_toward_the_teacher(tiny_overrides):
    import torch

    runner = Runner(load_config(None, tiny_overrides + ["stages.warmup.steps=15", "arms={w: {stages: [warmup]}}"]))
    runner.run()
    base = next(n for n in runner.nodes.values() if n.stage == "base" and n.role == "student")
    warm = next(n for n in runner.nodes.values() if n.stage == "warmup")
    a, _ = runner._load(base.id)
    b, _ = runner._load(warm.id)
    changed = [not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())]
    assert all(changed)
    kl = [json.loads(x)["kl_forward"] for x in (runner.node_dir(warm) / "metrics.jsonl").read_text().splitlines()]
    assert len(kl) == 15 and sum(kl[-3:]) < sum(kl[:3])
