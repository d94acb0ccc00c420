"""The run directory (rundir.py): where a node's files go, when a node counts as built, what a record says of its lineage."""

import json

from s2d_bench.config import load_config
from s2d_bench.identity import run_hash
from s2d_bench.plan import Node, plan
from s2d_bench.rundir import RunDir


def _dir(tmp_path, *overrides) -> tuple[RunDir, dict[str, Node]]:
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", "arms={a: {stages: [teacher_rl, warmup]}}", *overrides])
    return RunDir(cfg.output_dir, cfg, run_hash(cfg), 5.0), {n.id: n for n in plan(cfg)}


def _built(rd: RunDir, node: Node, draws: list[str], seconds: float = 1.5) -> None:
    partial = rd.clear(node)
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"weights")
    rd.commit(node, 3, seconds, draws)


def test_a_node_is_built_once_committed_and_damaged_files_make_it_unbuilt(tmp_path, capsys):
    rd, nodes = _dir(tmp_path)
    rl = next(n for n in nodes.values() if n.stage == "teacher_rl")
    assert not rd.is_trained(rl)
    _built(rd, rl, ["p2", "p1", "p2"])
    assert rd.is_trained(rl) and rd.model_ref(rl) == str(tmp_path / "run" / "nodes" / rl.id / "model")
    info = rd.stage_info(rl)
    assert (info["steps"], info["seconds"], info["labeled_draws"], info["labeled_ids"]) == (3, 1.5, 3, ["p1", "p2"])
    (rd.node_dir(rl) / "model" / "model.safetensors").write_bytes(b"weighs")
    assert not rd.is_trained(rl) and "fail their checksums (model.safetensors)" in capsys.readouterr().err
    (rd.node_dir(rl) / "eval-x.json").write_text("{}")
    (rd.node_dir(rl) / "diagnostics.json").write_text("{}")
    rd.clear(rl)  # retraining removes the model and everything measured on it
    assert sorted(p.name for p in rd.node_dir(rl).iterdir()) == ["stage.json"]


def test_a_base_model_from_a_path_is_built_and_consumed_nothing(tmp_path):
    rd, nodes = _dir(tmp_path, "teacher.builder=", f"teacher.path={tmp_path}")
    teacher = next(n for n in nodes.values() if n.stage == "base" and n.role == "teacher")
    student = next(n for n in nodes.values() if n.stage == "base" and n.role == "student")
    assert teacher.from_path and not student.from_path
    assert rd.is_trained(teacher) and not rd.is_trained(student)
    assert rd.model_ref(teacher) == str(tmp_path)
    assert rd.stage_info(teacher) == {"labeled_draws": 0, "labeled_ids": [], "seconds": 0.0}


def test_a_served_teacher_is_given_reached_at_its_url_and_named_served_in_records(tmp_path):
    rd, nodes = _dir(tmp_path, "teacher.builder=", "teacher.server=http://10.0.0.7:8000", "teacher.served_model=big",
                     "arms={a: {stages: [warmup]}}")
    teacher = next(n for n in nodes.values() if n.stage == "base" and n.role == "teacher")
    student = next(n for n in nodes.values() if n.stage == "base" and n.role == "student")
    assert teacher.served and teacher.given and not teacher.from_path and not student.given
    assert rd.is_trained(teacher) and not rd.is_trained(student)
    assert rd.model_ref(teacher) == "http://10.0.0.7:8000"
    assert rd.stage_info(teacher) == {"labeled_draws": 0, "labeled_ids": [], "seconds": 0.0}
    _built(rd, student, [], 0.0)
    fields = rd.record_fields(nodes, teacher)
    assert (fields["model"], fields["teacher_model"], fields["engine"]) == ("big (served)", "big (served)", "served")
    assert rd.record_fields(nodes, student)["engine"] == "hf"  # the student is evaluated here, by eval.engine


def test_a_record_carries_its_lineage_budget_and_config(tmp_path):
    rd, nodes = _dir(tmp_path, "seed=4", "seed_scope=all")
    by_stage = {n.stage: n for n in nodes.values() if n.stage != "base"}
    for node in nodes.values():
        if node.stage == "base":
            _built(rd, node, [], 0.0)
    _built(rd, by_stage["teacher_rl"], ["a", "b", "a"], 2.0)
    _built(rd, by_stage["warmup"], [], 3.0)
    warm = by_stage["warmup"]
    assert rd.record_fields(nodes, warm) == dict(
        model="tiny-qwen3-student", engine="hf", thinking=False, seed=4, seed_scope="all", stage="warmup", run="tiny", node=warm.id,
        role="student", arms=["a"], parent=warm.parent, teacher_node=by_stage["teacher_rl"].id, backend="torch",
        teacher_model="tiny-qwen3-teacher", student_model="tiny-qwen3-student", config_hash=rd.config_id, node_config=warm.cfg,
        labeled_draws=3, labeled_unique=2, labeled_per_stage={"warmup": 0, "teacher_rl": 3}, train_seconds=3.0)
    rd, nodes = _dir(tmp_path, "teacher.builder=", f"teacher.path={tmp_path}", "backend=trl", "eval.engine=vllm", "prompt.thinking=true")
    teacher = next(n for n in nodes.values() if n.role == "teacher")
    fields = rd.record_fields(nodes, teacher)
    assert (fields["model"], fields["teacher_model"], fields["backend"], fields["engine"], fields["thinking"]) == (
        str(tmp_path), str(tmp_path), "trl", "vllm", True)


def test_retraining_a_node_clears_what_was_measured_on_it_and_the_run_files_are_complete(tmp_path):
    rd, nodes = _dir(tmp_path)
    rl = next(n for n in nodes.values() if n.stage == "teacher_rl")
    _built(rd, rl, [])
    stage = json.loads((rd.node_dir(rl) / "stage.json").read_text())
    assert (stage["node"], stage["stage"], stage["steps"]) == (rl.id, "teacher_rl", 3)
    for name in ("eval-1.json", "completions-1.jsonl", "problems-1.jsonl", "diagnostics.json", "metrics.jsonl"):
        (rd.node_dir(rl) / name).write_text("{}")
    (rd.root / "tb" / rl.id).mkdir(parents=True)
    (rd.node_dir(rl) / "model.partial").mkdir()
    (rd.node_dir(rl) / "model.partial" / "shard-9.safetensors").write_text("a killed save's leftover")
    assert rd.tb_dir(rl) == rd.root / "tb" / rl.id
    rd.clear(rl)
    assert sorted(p.name for p in rd.node_dir(rl).iterdir()) == ["metrics.jsonl", "stage.json"]  # metrics are rewritten by the stage
    assert not rd.tb_dir(rl).exists()
    assert sorted(p.name for p in rd.node_dir(rl).iterdir()) == ["metrics.jsonl", "stage.json"]  # no half-saved model either

    rows = {"a": [(n.id, n.stage) for n in nodes.values()]}
    rd.remember_config(rows)
    rd.remember_config(rows)  # again: every folder and file already there
    from s2d_bench.config import to_dict

    assert json.loads((rd.root / "config.json").read_text()) == to_dict(rd.cfg)
    kept = rd.root / "configs" / f"{rd.config_id}.yaml"
    assert kept.read_text().startswith("name: tiny\n")  # the config's own order, not sorted
    assert load_config(str(kept)) == rd.cfg
    arms = json.loads(rd.arms_file(0).read_text())
    assert arms == {"suite": "tiny", "config": rd.config_id, "seed": 0, "written": 5.0, "arms": {"a": [list(r) for r in rows["a"]]}}


def test_results_hold_every_seed_of_the_config_oldest_first_and_an_unreadable_record_is_dropped(tmp_path, capsys):
    rd, nodes = _dir(tmp_path)
    rows = {"a": [(n.id, n.stage) for n in nodes.values()]}
    rd.remember_config(rows)
    assert json.loads(rd.arms_file(0).read_text())["arms"] == {"a": [list(r) for r in rows["a"]]}

    class Target:
        label, benchmark, data, limit = "add", "task", "task", None

        def protocol(self):
            return {"samples": 2}

    node_a, node_b = list(nodes.values())[:2]
    for node, stamp in ((node_a, 2.0), (node_b, 1.0)):
        rd.node_dir(node).mkdir(parents=True, exist_ok=True)
        rd.result_path(node, Target()).write_text(json.dumps({"node": node.id, "timestamp": stamp}))
    (rd.root / "arms" / f"tiny-{rd.config_id}-seed7.json").write_text("{torn")  # a torn arms file of another seed is skipped
    (rd.root / "arms" / f"tiny-{rd.config_id}-seed8.json").mkdir()  # and an unreadable one
    rd.write_results([], [Target()])
    assert [json.loads(line)["node"] for line in (rd.root / "results.jsonl").read_text().splitlines()] == [node_b.id, node_a.id]
    rd.result_path(node_a, Target()).write_text("{not json")
    assert rd.read_record(node_a, Target()) is None and not rd.result_path(node_a, Target()).exists()
    assert "is not a readable evaluation record; evaluating add again" in capsys.readouterr().err


def test_every_seed_of_a_run_locks_a_node_at_the_one_place_the_layout_names(tmp_path):
    """Seeds side by side (and a second `run` of one config) wait on each other through this file: it must be the same
    path for them, the node's own, inside the run directory where the module docstring says."""
    rd, nodes = _dir(tmp_path)
    other_seed, _ = _dir(tmp_path, "seed=3")
    locks = {rd.lock(n) for n in nodes.values()}
    assert len(locks) == len(nodes)
    for node in nodes.values():
        assert rd.lock(node) == other_seed.lock(node) == tmp_path / "run" / "locks" / f"{node.id}.lock"
