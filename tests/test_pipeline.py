"""The pipeline on tiny budgets: records, shared stages once, resume at stage boundaries."""

import json
import time

import pytest
import torch

from s2d_bench.backends.torch_backend import TorchBackend
from s2d_bench.config import load_config
from s2d_bench.pipeline import Runner
from s2d_bench.plan import plan
from s2d_bench.store import Store


@pytest.fixture
def stop_requests():
    """The stops a test asks of itself (SIGUSR1, Ctrl-C), cleared after it: what a stop asked must not reach the next test."""
    from s2d_bench import resume

    yield resume._requested  # noqa: SLF001
    resume._requested.clear()  # noqa: SLF001


def _count_stage_calls(monkeypatch):
    calls = []
    for name in ("teacher_rl", "warmup", "opd", "student_rl"):
        original = getattr(TorchBackend, name)

        def counted(self, job, _original=original, _name=name):
            calls.append(_name)
            return _original(self, job)

        monkeypatch.setattr(TorchBackend, name, counted)
    return calls


def test_run_writes_one_record_per_evaluation_and_resumes_without_redoing(tiny_overrides, monkeypatch):
    calls = _count_stage_calls(monkeypatch)
    runner = Runner(load_config(None, tiny_overrides))
    records = runner.run()
    # each distinct stage trained once although bridge and full share three of them
    assert sorted(calls) == ["opd", "student_rl", "student_rl", "teacher_rl", "warmup"]
    assert len(records) == 7  # 2 base + teacher_rl + warmup + opd + 2 x student_rl
    lines = (runner.dir.root / "results.jsonl").read_text().splitlines()
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
    metrics = [json.loads(x) for x in (runner.dir.node_dir(runner.nodes[rec["node"]]) / "metrics.jsonl").read_text().splitlines()]
    assert {"reward", "entropy", "response_length", "loss"} <= set(metrics[0])
    # every phase a node ran was measured (phasemem) and estimated by the preflight, and no other
    estimated = {n["node"]: set(n["phases"]) for n in json.loads((runner.dir.root / "preflight.json").read_text())["nodes"]}
    measured = {node: set(json.loads((runner.dir.root / "nodes" / node / "memory.json").read_text())["peaks_mib"]) for node in estimated}
    assert measured == estimated and set(estimated) == set(runner.nodes)
    phases = {runner.nodes[n].stage: p for n, p in estimated.items()}
    assert phases["base"] == {"eval add3mix"} and phases["teacher_rl"] == {"rollout", "update", "eval add3mix"}
    assert phases["warmup"] == phases["opd"] == {"rollout", "update", "eval add3mix", "c2"}
    # C1 after teacher RL, C2 after each distillation stage, stored with the node's stage and the run's seed
    diagnosed = {(d["node"], d["kind"]): (d["stage"], d["seed"]) for d in runner.store.diagnostics(runner.cfg.name)}
    kinds = {"teacher_rl": "c1", "warmup": "c2", "opd": "c2"}
    assert diagnosed == {(n.id, kinds[n.stage]): (n.stage, 0) for n in runner.nodes.values() if n.stage in kinds}

    calls.clear()
    again = Runner(load_config(None, [*tiny_overrides, "eval.max_batch_tokens=1"])).run()  # a memory bound: the same run
    assert calls == []
    assert [r["mean"] for r in again] == [r["mean"] for r in records]
    assert [r["config_hash"] for r in again] == [r["config_hash"] for r in records]
    assert len((runner.dir.root / "results.jsonl").read_text().splitlines()) == 7


def test_a_node_added_beyond_the_plan_is_built_and_evaluated_like_a_planned_one(tiny_overrides):
    """Runner.add (benchmarks/cross_swap.py: a stage trained from another grid's inputs): the node trains from its parent's
    model with its own seed, and its evaluation record names it and its lineage."""
    from s2d_bench.identity import node_id
    from s2d_bench.models.builders import load_pretrained
    from s2d_bench.plan import Node

    runner = Runner(load_config(None, [*tiny_overrides, "arms={w: {stages: [warmup]}}"]))
    runner.run()
    warm = next(n for n in runner.nodes.values() if n.stage == "warmup")
    again = Node(node_id("warmup", {"again_of": warm.id}), warm.stage, warm.role, warm.parent, warm.teacher, warm.cfg, [],
                 seed=warm.seed + 1, settings=warm.settings)
    runner.add(again)
    runner.build(again)
    (target,) = runner.targets
    record = runner.dir.read_record(again, target)
    assert (record["node"], record["parent"], record["stage"]) == (again.id, warm.parent, "warmup")
    weights = [load_pretrained(str(runner.dir.node_dir(n) / "model"))[0].state_dict() for n in (warm, again)]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # its own seed: another student


def test_a_python_callers_run_stops_after_the_node_on_sigusr1_and_at_once_on_ctrl_c(tiny_overrides, monkeypatch, stop_requests):
    """Runner.run outside the CLI, one node at a time: SIGUSR1 while a node is evaluated stops the run once that node is
    built (what it says: the nodes built so far are kept); Ctrl-C is Python's KeyboardInterrupt, at once (the CLI, not the
    library, turns a first Ctrl-C into a stop after the step)."""
    import os
    import signal

    from s2d_bench.errors import Stopped
    from s2d_bench.evaluation import Evaluation

    real = Evaluation.evaluate
    sent = []

    def evaluate(self, node):
        if not sent:
            sent.append(node.id)
            os.kill(os.getpid(), signum)
        return real(self, node)

    monkeypatch.setattr(Evaluation, "evaluate", evaluate)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a plain Python process
    try:
        signum = signal.SIGUSR1
        runner = Runner(load_config(None, [*tiny_overrides, "arms={d: {stages: [student_rl]}}"]))
        with pytest.raises(Stopped, match="^the nodes built so far are kept; stopped \\(SIGUSR1\\)"):
            runner.run()
        assert [n.id for n in runner.nodes.values() if runner.dir.read_record(n, runner.targets[0])] == sent  # that node, no other
        sent.clear()
        signum = signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            Runner(load_config(None, [*tiny_overrides, "arms={d: {stages: [student_rl]}}"])).run()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_run_directory_under_folders_not_made_yet_is_made_with_them(tiny_overrides, tmp_path):
    """run_dir may name a folder several levels below the nearest existing one: the run makes them all."""
    runner = Runner(load_config(None, [*tiny_overrides, f"run_dir={tmp_path / 'a' / 'b' / 'run'}"]))
    runner.prepare()
    assert json.loads((tmp_path / "a" / "b" / "run" / "preflight.json").read_text()) == runner.preflight()


def test_a_runs_arm_rows_in_the_store_carry_its_start_as_its_arms_file_does(tiny_overrides):
    """The store orders a suite's configs by when their runs started (the newest is the leaderboard's): its arm rows carry
    the run directory's start, the time the arms file says, so a store rebuilt from the directory orders them alike."""
    runner = Runner(load_config(None, tiny_overrides))
    time.sleep(0.01)
    runner.prepare()
    written = json.loads(runner.dir.arms_file(runner.cfg.seed).read_text())["written"]
    rows = runner.store.arms(runner.cfg.name)
    assert written == runner.dir.started and {r["written"] for r in rows} == {written} and len(rows) == 11


@pytest.mark.parametrize("every_steps", [2, 0])
def test_a_stage_built_again_after_a_crash_logs_each_step_once(tiny_overrides, monkeypatch, capsys, every_steps):
    """A crash after step 2 of 4: with a save after step 1 the stage continues from it (and says so) and its metrics keep
    the rows of the steps before it; with none (saves by minutes only) it starts again and its metrics start again. Either
    way each step's row once, in order, and no save is left once the model is committed."""
    from s2d_bench import resume

    overrides = [*tiny_overrides, "arms={d: {stages: [student_rl]}}", "stages.student_rl.steps=4", f"checkpoint.every_steps={every_steps}"]
    real, crashed = resume.Checkpoints.step_done, []

    def step_done(self, done, *args, **kwargs):
        if done == 3 and not crashed:
            crashed.append(done)
            raise RuntimeError("killed after step 2")
        return real(self, done, *args, **kwargs)

    monkeypatch.setattr(resume.Checkpoints, "step_done", step_done)
    with pytest.raises(RuntimeError, match="killed after step 2"):
        Runner(load_config(None, overrides)).run()
    (node,) = [n for n in Runner(load_config(None, overrides)).nodes.values() if n.stage == "student_rl"]
    capsys.readouterr()
    runner = Runner(load_config(None, overrides))
    assert (runner.dir.node_dir(node) / "resume").is_dir() == bool(every_steps)
    runner.run()
    rows = [json.loads(line) for line in (runner.dir.node_dir(node) / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1, 2, 3]
    assert ("student_rl: continuing from its saved state at step 2" in capsys.readouterr().err) == bool(every_steps)
    assert not (runner.dir.node_dir(node) / "resume").exists() and runner.dir.is_trained(node)


def test_a_stop_asked_in_a_stages_last_step_ends_the_run_once_its_model_is_saved(tiny_overrides, monkeypatch, stop_requests):
    """SIGUSR1 during a stage's last step: the step saves no state (the model is saved next); the run stops right after
    the model is committed, before its evaluation, and says so."""
    import os
    import signal

    from s2d_bench import resume
    from s2d_bench.errors import Stopped

    overrides = [*tiny_overrides, "arms={d: {stages: [student_rl]}}"]
    real = resume.Checkpoints.step_done

    def step_done(self, done, steps, *args, **kwargs):
        if self.stage == "student_rl" and done == steps:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real(self, done, steps, *args, **kwargs)

    monkeypatch.setattr(resume.Checkpoints, "step_done", step_done)
    runner = Runner(load_config(None, overrides))
    (node,) = [n for n in runner.nodes.values() if n.stage == "student_rl"]
    with pytest.raises(Stopped, match="student_rl finished and its model is saved"):
        runner.run()
    assert runner.dir.is_trained(node) and runner.dir.read_record(node, runner.targets[0]) is None


def test_each_nodes_curves_are_its_metrics_plotted_for_its_stage_under_its_name(tiny_overrides, tmp_path):
    """curves.png beside metrics.jsonl: the stage's panels of its metrics, titled with what trained and the node's id."""
    from s2d_bench.reporting.curves import plot_metrics

    runner = Runner(load_config(None, [*tiny_overrides, "arms={d: {stages: [student_rl]}}"]))
    runner.run()
    for node in runner.nodes.values():
        out, name = runner.dir.node_dir(node), node.stage if node.stage != "base" else f"pretrain_{node.role}"
        assert plot_metrics(out / "metrics.jsonl", tmp_path / f"{node.id}.png", node.stage, f"{name}  ({node.id})")
        assert (out / "curves.png").read_bytes() == (tmp_path / f"{node.id}.png").read_bytes(), node.id


def test_a_zero3_stage_is_saved_whole_and_evaluated(tiny_overrides):
    """DeepSpeed's ZeRO-3 partitions a stage's parameters over its ranks (one here): the model is gathered whole to be
    saved, so it reloads with the base model's shapes, trained, and is evaluated."""
    pytest.importorskip("deepspeed")
    from s2d_bench.models.builders import load_pretrained

    runner = Runner(load_config(None, [*tiny_overrides, "backend=deepspeed", "deepspeed.zero_stage=3", "arms={d: {stages: [warmup]}}"]))
    records = runner.run()
    base, stage = (next(n for n in runner.nodes.values() if n.stage == s and n.role == "student") for s in ("base", "warmup"))
    before, after = (load_pretrained(runner.dir.model_ref(n), "cpu")[0].state_dict() for n in (base, stage))
    assert [(k, v.shape) for k, v in after.items()] == [(k, v.shape) for k, v in before.items()]
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert {base.id, stage.id} <= {r["node"] for r in records}


def test_deepspeed_builds_one_node_at_a_time_and_says_so_only_when_asked_for_more(tiny_overrides, capsys):
    """DeepSpeed's process group is the process's: jobs above 1 build one node at a time (with a line saying why);
    jobs=1 says nothing; the torch backend builds `jobs` at a time."""
    pytest.importorskip("deepspeed")
    assert Runner(load_config(None, [*tiny_overrides, "backend=deepspeed", "jobs=1"])).jobs == 1
    assert "one node at a time" not in capsys.readouterr().err
    assert Runner(load_config(None, [*tiny_overrides, "backend=deepspeed", "jobs=2"])).jobs == 1
    assert "jobs=2: backend=deepspeed on 1 rank(s) builds one node at a time; its ranks share each stage instead\n" in capsys.readouterr().err
    assert Runner(load_config(None, [*tiny_overrides, "jobs=2"])).jobs == 2


def test_a_base_models_pretraining_shows_its_role_on_its_progress_bar(tiny_overrides, capsys):
    runner = Runner(load_config(None, [*tiny_overrides, "arms={d: {stages: [student_rl]}}"]))
    runner.build(next(n for n in runner.nodes.values() if n.stage == "base" and n.role == "student"))
    assert "pretrain student: 100%" in capsys.readouterr().err


def test_a_stop_asked_while_a_base_model_pretrains_ends_the_run_once_it_is_evaluated(tiny_overrides, monkeypatch, stop_requests):
    """Pretraining keeps no saves, so a stop asked during it waits for the node: the base model is saved and evaluated,
    then the run stops with the nodes built so far."""
    import os
    import signal

    from s2d_bench import training
    from s2d_bench.errors import Stopped

    real = training.pretrain

    def pretrain(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR1)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "pretrain", pretrain)
    runner = Runner(load_config(None, [*tiny_overrides, "arms={d: {stages: [student_rl]}}"]))
    with pytest.raises(Stopped, match="^the nodes built so far are kept"):
        runner.run()
    built = [n for n in runner.nodes.values() if runner.dir.read_record(n, runner.targets[0])]
    assert len(built) == 1 and built[0].stage == "base"


def test_a_store_that_cannot_be_created_is_refused_before_the_run_naming_the_store(tiny_overrides, tmp_path):
    from s2d_bench.errors import UserError

    (tmp_path / "a-file").write_text("")
    with pytest.raises(UserError, match="^store '.*a-file/s.sqlite': '.*a-file' is a file, so nothing can be created under it"):
        Runner(load_config(None, [*tiny_overrides, f"store={tmp_path / 'a-file' / 's.sqlite'}"]))


def test_a_node_is_built_under_its_lock_and_its_memory_measured_on_the_runs_device(tiny_overrides, monkeypatch):
    """A node built while another process (a second run of the config, a seed beside it) holds its lock waits for the
    lock before training; memory.json says what was measured: a CUDA device's allocated memory, a CPU's resident set."""
    import threading

    from s2d_bench import phasemem
    from s2d_bench.nodefiles import node_lock
    from s2d_bench.training import Training

    runner = Runner(load_config(None, [*tiny_overrides, "arms={d: {stages: [student_rl]}}"]))
    base = next(n for n in runner.nodes.values() if n.stage == "base")
    held, times = threading.Event(), {}

    def hold():
        with node_lock(runner.dir.lock(base)):
            held.set()
            time.sleep(0.5)
            times["released"] = time.monotonic()

    real = Training.train
    monkeypatch.setattr(Training, "train", lambda self, node: times.setdefault("trained", time.monotonic()) and real(self, node))
    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    runner.build(base)
    holder.join()
    assert times["trained"] >= times["released"]
    assert json.loads((runner.dir.node_dir(base) / "memory.json").read_text())["measure"] == "resident set"

    monkeypatch.setattr(phasemem, "_cuda_probe", lambda: (lambda: 0, lambda begun: 2**20))  # a device that grew 1 MiB a phase
    runner.device = "cuda:0"  # what measures: training and evaluation keep their own device (this machine's CPU)
    for path in [runner.dir.node_dir(base) / "memory.json", *runner.dir.node_dir(base).glob("eval-*.json")]:
        path.unlink()
    runner.build(base)  # trained: evaluated again, measured as a CUDA device's
    assert json.loads((runner.dir.node_dir(base) / "memory.json").read_text())["measure"] == "cuda allocated"


def test_a_workers_build_outlives_sigusr1_in_evaluation_and_ends_at_once_on_ctrl_c(tiny_overrides, monkeypatch, stop_requests):
    """pipeline.build_node, one node built by a scheduler worker or a Slurm job (`s2d-bench build-node`): SIGUSR1 while
    the node is evaluated ends nothing (the node is built and evaluated; the request waits for its caller, which stops or
    requeues); Ctrl-C is Python's KeyboardInterrupt at once, never a stop at the next step (which a Slurm job requeues)."""
    import os
    import signal

    from s2d_bench import resume
    from s2d_bench.config import to_dict
    from s2d_bench.evaluation import Evaluation
    from s2d_bench.pipeline import build_node

    real = Evaluation.evaluate

    def evaluate(self, node):
        os.kill(os.getpid(), signum)
        return real(self, node)

    monkeypatch.setattr(Evaluation, "evaluate", evaluate)
    cfg = load_config(None, [*tiny_overrides, "arms={d: {stages: [student_rl]}}"])
    runner = Runner(cfg)
    base = next(n for n in runner.nodes.values() if n.stage == "base" and n.role == "student")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a Slurm job's process
    try:
        signum = signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            build_node(to_dict(cfg), base.id, 1)
        assert runner.dir.is_trained(base) and not runner.dir.read_record(base, runner.targets[0])  # trained, stopped in its evaluation
        assert not resume._requested  # noqa: SLF001 - nothing deferred
        signum = signal.SIGUSR1
        build_node(to_dict(cfg), base.id, 1)
        assert runner.dir.read_record(base, runner.targets[0])["node"] == base.id
        assert resume._requested == ["SIGUSR1"]  # noqa: SLF001 - kept for the caller
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_run_reports_each_arms_path_under_its_seed(tiny_overrides):
    """report_to: each arm's avg@k after each of its models (the base student first) under tb/arms/<arm>-seed<seed>."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runner = Runner(load_config(None, [*tiny_overrides, "report_to=[tensorboard]", "seed=2", "arms={d: {stages: [student_rl]}}"]))
    records = runner.run()
    acc = EventAccumulator(str(runner.dir.root / "tb" / "arms" / "d-seed2"), size_guidance={"scalars": 0})
    acc.Reload()
    ((tag,),) = [acc.Tags()["scalars"]]
    means = {r["node"]: r["mean"] for r in records}
    assert tag == f"eval/add3mix/avg@{records[0]['k']}"
    assert [(e.step, e.value) for e in acc.Scalars(tag)] == [
        (i, pytest.approx(means[node], rel=1e-6)) for i, (node, _) in enumerate(runner.arm_rows()["d"])]
    # each node's training curves (tb/<node>): every logged row at its own step
    for node in runner.nodes.values():
        rows = [json.loads(line) for line in (runner.dir.node_dir(node) / "metrics.jsonl").read_text().splitlines()]
        curves = EventAccumulator(str(runner.dir.tb_dir(node)), size_guidance={"scalars": 0})
        curves.Reload()
        prefix = node.stage if node.stage != "base" else f"pretrain_{node.role}"
        assert [(e.step, e.value) for e in curves.Scalars(f"{prefix}/loss")] == [
            (row["step"], pytest.approx(row["loss"], rel=1e-6)) for row in rows], node.id


def test_an_evaluation_token_budget_splits_batches_and_changes_no_completion(tiny_overrides, monkeypatch):
    """eval.max_batch_tokens bounds every sampling batch's KV cache; problems sample from their own seeds, so a budget
    that forces one problem a batch re-evaluates a node to the same completions, byte for byte."""
    from s2d_bench.generation import hf

    overrides = [*tiny_overrides, "arms={w: {stages: [warmup]}}"]
    runner = Runner(load_config(None, overrides))
    runner.run()
    folder = runner.dir.node_dir(next(n for n in runner.nodes.values() if n.stage == "warmup"))
    [completions] = folder.glob("completions-*.jsonl")
    whole = completions.read_bytes()
    for path in [completions, *folder.glob("eval-*.json")]:
        path.unlink()
    batches, real = [], hf.sample
    monkeypatch.setattr(hf.HFEngine, "decode", staticmethod(lambda model, ids, *args: batches.append(ids.shape[0]) or real(model, ids, *args)))
    Runner(load_config(None, [*overrides, "eval.max_batch_tokens=1"])).run()
    problems = len({json.loads(line)["id"] for line in whole.decode().splitlines()})
    assert completions.read_bytes() == whole and batches == [1] * problems  # one problem a batch


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
    assert not list(runner.dir.root.glob("nodes/*/model.partial"))


def test_a_model_left_as_model_partial_is_trained_again_never_loaded(tiny_overrides, monkeypatch):
    """A kill between writing `model.partial/` (and stage.json) and renaming it leaves a node whose model is only
    partial: the rerun trains that node again and ends with a whole `model/`."""
    runner = Runner(load_config(None, tiny_overrides))
    runner.run()
    opd = next(n for n in runner.nodes.values() if n.stage == "opd")
    folder = runner.dir.node_dir(opd)
    (folder / "model").rename(folder / "model.partial")  # stage.json stays: it is written before the rename
    calls = _count_stage_calls(monkeypatch)
    Runner(load_config(None, tiny_overrides)).run()
    assert calls == ["opd"]  # its children keep their models: node ids depend on configs, not on weights
    assert (folder / "model").is_dir() and not (folder / "model.partial").exists()


def test_stages_change_parameters_and_the_student_moves_toward_the_teacher(tiny_overrides):
    import torch

    runner = Runner(load_config(None, tiny_overrides + ["stages.warmup.steps=15", "arms={w: {stages: [warmup]}}"]))
    runner.run()
    base = next(n for n in runner.nodes.values() if n.stage == "base" and n.role == "student")
    warm = next(n for n in runner.nodes.values() if n.stage == "warmup")
    a, _ = runner.evaluation.load(base.id)
    b, _ = runner.evaluation.load(warm.id)
    changed = [not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())]
    assert all(changed)
    kl = [json.loads(x)["kl_forward"] for x in (runner.dir.node_dir(warm) / "metrics.jsonl").read_text().splitlines()]
    assert len(kl) == 15 and sum(kl[-3:]) < sum(kl[:3])


def test_every_benchmark_is_evaluated_after_every_stage_with_its_own_protocol(tiny_overrides, tmp_path):
    """eval.benchmarks: the task's split and a registered benchmark (from a local file), one record per
    (model, benchmark) in results.jsonl and the store, one leaderboard column group each."""
    from s2d_bench.leaderboards import build
    from s2d_bench.store import Store

    rows = [{"id": f"m{i}", "problem": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(5)]
    (tmp_path / "math500.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = tmp_path / "two.sqlite"
    cfg = load_config(None, [*tiny_overrides, f"store={store}", f"task.data_dir={tmp_path}", "arms={bridge: {stages: [teacher_rl]}}",
                             "eval.benchmarks=[{name: task}, {name: math500, samples: 3, max_new_tokens: 5, limit: 4}]"])
    records = Runner(cfg).run()
    assert len(records) == 3 * 2  # base teacher, base student, teacher_rl: two benchmarks each
    by_task = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    assert sorted(by_task) == ["add3mix", "math500"]
    math = by_task["math500"][0]
    assert (math["benchmark"], math["n"], math["k"], math["grader"]) == ("math500", 4, 3, "math_verify")
    assert math["eval_config"] == {"samples": 3, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "max_new_tokens": 5,  # its own, as set
                                   "extraction": "boxes"}
    task = by_task["add3mix"][0]
    assert (task["benchmark"], task["n"], task["k"], task["grader"]) == ("task", 6, 2, "exact")
    assert all((r["seed"], r["eval_seed"]) == (0, 1234) for r in records)  # the run's seed, and the sampling seed apart
    assert len((Runner(cfg).dir.root / "results.jsonl").read_text().splitlines()) == 6
    assert len(Store(str(store)).evals("tiny")) == 6
    table = build(Store(str(store)), "tiny").main
    assert {"add3mix avg@2 [95% CI]", "math500 avg@3 [95% CI]"} <= set(table.columns)


def test_eval_benchmarks_are_checked_when_the_config_loads():
    from s2d_bench.errors import UserError

    with pytest.raises(UserError, match="twice"):
        load_config(None, ["eval.benchmarks=[{name: task}, {name: task}]"])
    with pytest.raises(UserError, match="samples must be >= 1"):
        load_config(None, ["eval.benchmarks=[{name: math500, samples: 0}]"])


def test_two_jobs_build_the_same_nodes_and_numbers_as_one(tiny_overrides, tmp_path):
    """jobs=2 builds independent nodes in two worker processes; node seeds come from node ids, so every
    trained weight and every score equals the sequential run's."""
    from s2d_bench.models.builders import load_pretrained

    arms = "arms={direct-grpo: {stages: [student_rl]}, bridge: {stages: [teacher_rl, opd]}}"
    one = Runner(load_config(None, [*tiny_overrides, arms, f"run_dir={tmp_path / 'one'}", f"store={tmp_path / 'one.sqlite'}"]))
    two = Runner(load_config(None, [*tiny_overrides, arms, f"run_dir={tmp_path / 'two'}", f"store={tmp_path / 'two.sqlite'}", "jobs=2"]))
    a, b = one.run(), two.run()
    key = lambda r: (r["node"], r["task"])  # noqa: E731
    assert [key(r) for r in a] == [key(r) for r in b] and len(a) == 5
    for x, y in zip(a, b):
        assert (x["per_problem"], x["mean"], x["labeled_draws"]) == (y["per_problem"], y["mean"], y["labeled_draws"])
    for node in one.nodes.values():
        p1 = load_pretrained(str(one.dir.node_dir(node) / "model"))[0].state_dict()
        p2 = load_pretrained(str(two.dir.node_dir(node) / "model"))[0].state_dict()
        assert all(torch.equal(p1[k], p2[k]) for k in p1), node.id
    assert len(Store(str(tmp_path / "two.sqlite")).evals("tiny")) == 5


def test_jobs_must_be_positive():
    from s2d_bench.errors import UserError

    with pytest.raises(UserError, match="jobs must be >= 1"):
        load_config(None, ["jobs=0"])


def test_seed_scope_all_gives_each_seed_its_own_base_models_and_stages_keeps_one(tiny_overrides):
    """seed_scope 'stages' (the default): every seed shares the base models, pretrained once per task.seed.
    'all': the run seed also seeds the base models' initialisation and pretraining corpus, so the base nodes, their
    weights and everything downstream differ by seed, while the task's splits (its test problems) stay the same."""
    import torch

    def bases(*extra):
        cfg = load_config(None, [*tiny_overrides, "arms={b: {stages: [warmup]}}", "teacher.pretrain.steps=2", *extra])
        runner = Runner(cfg)
        nodes = [n for n in plan(cfg) if n.stage == "base"]
        student = next(n for n in nodes if n.role == "student")
        model, _, _ = runner.training.base(student, lambda row: None)
        return {n.id for n in nodes}, torch.cat([p.detach().flatten() for p in model.parameters()]), runner.splits

    ids0, w0, splits0 = bases("seed=0")
    ids1, w1, _ = bases("seed=1")
    assert ids0 == ids1 and torch.equal(w0, w1)
    all0, a0, splits_all = bases("seed=0", "seed_scope=all")
    all1, a1, _ = bases("seed=1", "seed_scope=all")
    assert not (all0 & all1) and not torch.equal(a0, a1) and not (all0 & ids0)
    assert [p.id for p in splits_all.test] == [p.id for p in splits0.test]
    from s2d_bench.identity import run_hash

    assert run_hash(load_config(None, tiny_overrides)) == run_hash(load_config(None, [*tiny_overrides, "seed_scope=stages"]))


def test_run_all_builds_each_seed_in_turn_or_all_seeds_in_one_schedule_with_the_same_records(tiny_overrides, tmp_path, capsys):
    """`run_all` over a grid's seeds (sharing a run directory): with jobs=1 seed after seed, each announced; with jobs=2
    one schedule for every seed's nodes, then each run stores its records; both give the same records in the same order."""
    import dataclasses

    from s2d_bench.pipeline import run_all

    def runners(jobs: int, where: str) -> list[Runner]:
        cfg = load_config(None, [*tiny_overrides, "arms={d: {stages: [student_rl]}}", f"run_dir={tmp_path / where}",
                                 f"store={tmp_path / where}.sqlite", f"jobs={jobs}"])
        return [Runner(dataclasses.replace(cfg, seed=seed)) for seed in (1, 2)]

    said: dict[int, list[str]] = {1: [], 2: []}
    done, preflights = {}, {}
    for jobs in (1, 2):
        done[jobs] = run_all(made := runners(jobs, f"jobs{jobs}"), said[jobs].append)
        preflights[jobs] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("preflight: ")]
    assert said == {1: ["seed=1", "seed=2"], 2: ["seeds 1, 2 jobs=2"]}
    assert len(preflights[1]) == len(preflights[2]) == 2  # each run prepared once: the schedule's runs only store
    assert made[1].arm_paths() == {"d": [n.id for n in made[1].nodes.values() if n.stage == "student_rl"]}
    rows = {jobs: [[(r["node"], r["per_problem"], r["labeled_draws"]) for r in records] for records in out] for jobs, out in done.items()}
    assert rows[1] == rows[2] and [len(records) for records in rows[1]] == [3, 3]  # the base models, then the stage
    assert rows[1][0][:2] == rows[1][1][:2] and rows[1][0][2][0] != rows[1][1][2][0]  # shared base models, a stage node per seed
    assert len(Store(str(tmp_path / "jobs2.sqlite")).evals("tiny")) == 4


def test_a_slurm_run_is_handed_to_the_slurm_executor(tiny_overrides, monkeypatch):
    """The dispatch alone (tests/test_slurm.py runs grids on a real one-node cluster, from the CLI's subprocess)."""
    from s2d_bench import slurm
    from s2d_bench.pipeline import run_all

    handed = []
    monkeypatch.setattr(slurm, "run", lambda runners, announce: handed.append((runners, announce)) or "queued")
    runner = Runner(load_config(None, [*tiny_overrides, "executor=slurm"]))
    announce = print
    assert run_all([runner], announce) == "queued" and handed == [([runner], announce)]
    assert not runner.dir.root.exists()  # nothing was built here


def test_a_workers_job_builds_one_node_of_the_run_its_config_describes_with_its_threads(tiny_overrides):
    """pipeline.build_node, run here as a scheduler worker (or a Slurm job) runs it: that node trained and evaluated, no
    other, at the threads it was given."""
    from s2d_bench.config import to_dict
    from s2d_bench.pipeline import build_node

    cfg = load_config(None, [*tiny_overrides, "arms={d: {stages: [student_rl]}}"])
    runner = Runner(cfg)
    runner.prepare()
    base = runner.base("student")
    threads = torch.get_num_threads()
    try:
        build_node(to_dict(cfg), base.id, 2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert [n.id for n in runner.nodes.values() if runner.dir.is_trained(n)] == [base.id]
    assert all(runner.dir.read_record(base, t) is not None for t in runner.targets)


@pytest.mark.parametrize("thinking", [False, True])
def test_a_stage_trains_its_parents_model_against_a_frozen_teacher_or_a_served_one_prompted_as_the_run(
        tiny_overrides, served_teacher_run, monkeypatch, thinking):
    """The parent's model is loaded to be trained, the teacher frozen (DeepSpeed partitions each by its own setting: ZeRO-3
    for the trained model, `teacher_zero3` for the teacher); a served teacher is asked in the run's prompt mode to stop
    where the student stops. RL has no teacher."""
    from s2d_bench.generation.protocol import stop_ids
    from s2d_bench.models.builders import tiny_qwen3_student
    from s2d_bench.served.teacher import ServedTeacher

    loads = []

    def load(self, ref, trained):
        loads.append((ref, trained))
        return tiny_qwen3_student()

    monkeypatch.setattr(TorchBackend, "load", load)
    runner = Runner(load_config(None, tiny_overrides + [f"prompt.thinking={str(thinking).lower()}"]))
    by_stage = {n.stage: n for n in runner.nodes.values()}
    for stage in ("opd", "student_rl"):
        node = by_stage[stage]
        loads.clear()
        _, _, teacher = runner.training.models(node)
        parent_ref = runner.dir.model_ref(runner.nodes[node.parent])
        if stage == "opd":
            assert loads == [(parent_ref, True), (runner.dir.model_ref(runner.nodes[node.teacher]), False)]
            assert loads[0][1] is True and loads[1][1] is False
        else:
            assert loads == [(parent_ref, True)] and loads[0][1] is True and teacher is None

    runner = Runner(load_config(None, [*served_teacher_run, "arms={b: {stages: [warmup]}}", "stages.warmup.estimator=topk",
                                       f"prompt.thinking={str(thinking).lower()}"]))
    (warmup,) = (n for n in runner.nodes.values() if n.stage == "warmup")
    loads.clear()
    model, tok, teacher = runner.training.models(warmup)
    assert loads == [(runner.dir.model_ref(runner.nodes[warmup.parent]), True)] and loads[0][1] is True  # nothing else loaded
    assert isinstance(teacher, ServedTeacher) and teacher.thinking is thinking and teacher.name == "t"
    assert teacher.stop_ids == stop_ids(model, tok) and teacher.stop_ids


@pytest.mark.usefixtures("python_signals")
def test_a_ctrl_c_mid_stage_stops_it_at_a_step_boundary_with_its_state_saved_and_a_rerun_continues(tiny_overrides, monkeypatch):
    import signal

    from s2d_bench.errors import Stopped

    original = TorchBackend.opd

    def interrupted(self, job):
        signal.raise_signal(signal.SIGINT)  # a user's first Ctrl-C as the stage starts: a stop at the next step boundary
        return original(self, job)

    monkeypatch.setattr(TorchBackend, "opd", interrupted)
    with pytest.raises(Stopped, match=r"stopped \(SIGINT\)"):
        Runner(load_config(None, tiny_overrides)).run()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own handler is back
    monkeypatch.undo()
    runner = Runner(load_config(None, tiny_overrides))
    (opd,) = (n for n in runner.nodes.values() if n.stage == "opd")
    assert list((runner.dir.node_dir(opd) / "resume").iterdir()) and not runner.dir.is_trained(opd)
    calls = _count_stage_calls(monkeypatch)
    runner.run()
    steps = runner.cfg.stages.opd.steps
    assert calls.count("opd") == 1 and runner.dir.stage_info(opd)["steps"] == steps
    rows = [json.loads(line) for line in (runner.dir.node_dir(opd) / "metrics.jsonl").read_text().splitlines()]
    assert steps > 1 and [r["step"] for r in rows] == list(range(steps))  # the step before the stop, then the rest


def test_a_stage_is_given_its_nodes_folder_and_rewards_by_the_tasks_grader(tiny_overrides, monkeypatch):
    """An RL stage's reward grades by the task's grader (a boxed right answer 1, a wrong one 0); a distillation stage's
    folder (where TRL keeps its teacher rollouts) is its node's."""
    seen = {}
    rl, warmup = TorchBackend.teacher_rl, TorchBackend.warmup

    def graded(self, job):
        p = job.problems[0]
        seen["rewards"] = job.reward([f"so \\boxed{{{p.answer}}}", "\\boxed{-1}"], [p, p]).rewards
        return rl(self, job)

    def folder(self, job):
        seen["workdir"] = job.workdir
        return warmup(self, job)

    monkeypatch.setattr(TorchBackend, "teacher_rl", graded)
    monkeypatch.setattr(TorchBackend, "warmup", folder)
    runner = Runner(load_config(None, tiny_overrides + ["arms={b: {stages: [teacher_rl, warmup]}}"]))
    took = {}
    for node in runner.nodes.values():  # plan order: parents first; trained only, no evaluation
        start = time.perf_counter()
        runner.training.train(node)
        took[node.stage if node.stage != "base" else node.role] = (time.perf_counter() - start, runner.dir.stage_info(node))
        assert not (runner.dir.node_dir(node) / "resume").exists()  # committed: nothing left to continue
    (warm,) = (n for n in runner.nodes.values() if n.stage == "warmup")
    assert seen == {"rewards": [1.0, 0.0], "workdir": str(runner.dir.node_dir(warm))}
    # stage.json: the steps taken, the seconds the node took, the labeled problems drawn (RL: 2 steps of 4 prompts)
    assert {name: (info["steps"], info["labeled_draws"]) for name, (_, info) in took.items()} == {
        "teacher": (20, 0), "student": (20, 0), "teacher_rl": (2, 8), "warmup": (2, 0)}
    assert all(0 < info["seconds"] <= wall for wall, info in took.values())


def test_only_a_served_teachers_warmup_keeps_its_rollouts_in_the_run_directorys_cache_unless_told_not_to(
        tiny_overrides, served_teacher_run, tmp_path):
    """`teacher_cache` unset or true: a served teacher's warmup keeps its rollouts in <run_dir>/teacher-cache; false: it
    keeps none; OPD (the student samples) and a local teacher's stages have nothing to keep."""
    local = Runner(load_config(None, tiny_overrides))
    assert all(local.training.teacher_cache(n) is None for n in local.nodes.values() if n.stage != "base")
    served = [*served_teacher_run, "arms={b: {stages: [warmup, opd]}}", "stages.warmup.estimator=topk", "stages.opd.estimator=sampled"]
    for setting, cached in (([], True), (["stages.warmup.teacher_cache=true"], True), (["stages.warmup.teacher_cache=false"], False)):
        runner = Runner(load_config(None, served + setting))
        by_stage = {n.stage: n for n in runner.nodes.values()}
        assert runner.training.teacher_cache(by_stage["warmup"]) == (tmp_path / "served" / "teacher-cache" if cached else None)
        assert runner.training.teacher_cache(by_stage["opd"]) is None


def test_a_rank_other_than_0_trains_a_stage_with_the_others_and_writes_nothing_and_pretrains_nothing(tiny_overrides, monkeypatch):
    """Rank 0 alone pretrains a base model, clears a node's folder, logs, saves and commits; every rank trains a stage."""
    import s2d_bench.training as training

    runner = Runner(load_config(None, tiny_overrides + ["arms={b: {stages: [warmup]}}"]))
    nodes = list(runner.nodes.values())
    for node in nodes[:-1]:  # the base models, built by rank 0
        runner.training.train(node)
    warm = nodes[-1]
    assert warm.stage == "warmup"
    folder = runner.dir.node_dir(warm)
    folder.mkdir(parents=True)
    (folder / "diagnostics.json").write_text("{}")  # what rank 0 would clear
    pretrained, calls = [], _count_stage_calls(monkeypatch)
    monkeypatch.setattr(training, "pretrain", lambda *a, **k: pretrained.append(a))
    monkeypatch.setattr(training.distributed, "is_main", lambda: False)
    for node in nodes:
        runner.training.train(node)
    assert pretrained == [] and calls == ["warmup"]
    assert sorted(p.name for p in folder.iterdir()) == ["diagnostics.json"]  # no metrics, no model, no stage.json: rank 0's
    assert not runner.dir.is_trained(warm)


def test_each_nodes_curves_and_progress_bars_are_named_for_its_stage_or_for_the_role_of_a_base_model(tiny_overrides, monkeypatch):
    """Training curves under the stage's name (a base model's: pretrain_<role>), its evaluation at the node's steps, and the
    evaluation's progress bar saying which node it samples."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import s2d_bench.evaluation as evaluation

    bars, evaluate_target = [], evaluation.evaluate_target
    monkeypatch.setattr(evaluation, "evaluate_target", lambda *a: bars.append(a[-1]) or evaluate_target(*a))
    runner = Runner(load_config(None, tiny_overrides + ["report_to=[tensorboard]", "arms={b: {stages: [teacher_rl]}}"]))
    named = {}
    for node in runner.nodes.values():
        runner.training.train(node)
        runner.evaluation.evaluate(node)
        events = EventAccumulator(str(runner.dir.tb_dir(node)))
        events.Reload()
        tags = events.Tags()["scalars"]
        named[node.stage if node.stage != "base" else node.role] = {tag.split("/")[0] for tag in tags if not tag.startswith("eval/")}
        ((step, mean),) = [(e.step, e.value) for e in events.Scalars("eval/add3mix/avg@2")]
        record = runner.dir.read_record(node, runner.targets[0])
        assert step == runner.dir.stage_info(node)["steps"] and mean == pytest.approx(record["mean"], rel=1e-6)
    assert named == {"teacher": {"pretrain_teacher"}, "student": {"pretrain_student"}, "teacher_rl": {"teacher_rl"}}
    assert bars == ["eval base teacher", "eval base student", "eval teacher_rl"]


def test_c2_samples_the_test_prompts_as_evaluation_does_with_its_models_in_evaluations_dtype(tiny_overrides, monkeypatch):
    """The C2 diagnostics sample as evaluation does: the test split's prompts, its token budget, seed, prompt mode and
    batches, and load each model in its dtype: bf16 on a GPU that has it (what the preflight plans that phase's memory
    for), float32 on the CPU or on a GPU without bf16."""
    from dataclasses import replace

    from s2d_bench import diagnostics
    from s2d_bench.identity import EVAL_SEED

    runner = Runner(load_config(None, [*tiny_overrides, "prompt.thinking=true", "eval.max_new_tokens=7", "eval.prompts_per_batch=3",
                                       "eval.max_batch_tokens=5000"]))
    node = runner.base("student")
    asked, calls = [], []

    def of_node(node, folder, load, *rest):
        calls.append(rest)
        return load(node.id)

    monkeypatch.setattr(diagnostics, "of_node", of_node)
    monkeypatch.setattr(type(runner.evaluation), "load", lambda self, node_id, dtype=torch.float32: asked.append((self.device, dtype)))
    for device, bf16 in (("cpu", True), ("cuda", True), ("cuda", False)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        replace(runner.evaluation, device=device).diagnostics_of(node)
    assert asked == [("cpu", torch.float32), ("cuda", torch.bfloat16), ("cuda", torch.float32)]
    cfg = runner.cfg
    assert calls[0] == ([p.prompt for p in runner.splits.test], 7, EVAL_SEED, True, cfg.diagnostics, runner.evaluation.engine_config())
    assert [(c[-1].device, c[-1].prompts_per_batch, c[-1].max_batch_tokens, c[-1].thinking) for c in calls] == [
        (device, 3, 5000, True) for device in ("cpu", "cuda", "cuda")]


def test_a_model_from_a_path_is_evaluated_at_step_0_of_its_curves(tiny_overrides, student_from_path, monkeypatch):
    """A base model from a path has no stage, so no steps: its evaluations are reported at step 0."""
    import s2d_bench.evaluation as evaluation

    overrides = [o for o in tiny_overrides if not o.startswith("student.pretrain")]  # a model from a path is not pretrained
    runner = Runner(load_config(None, [*overrides, *student_from_path]))
    reported = []
    monkeypatch.setattr(evaluation, "report_evaluations", lambda names, folder, records, step: reported.append((len(records), step)))
    runner.evaluation.evaluate(runner.base("student"))
    assert reported == [(len(runner.targets), 0)]


def test_a_built_nodes_model_is_loaded_onto_the_runs_device_in_the_dtype_asked(tiny_overrides):
    """C2 loads each model onto the run's device in evaluation's dtype (here the meta device: the one besides the CPU that
    every machine has, where a model left on the CPU shows)."""
    from dataclasses import replace

    runner = Runner(load_config(None, tiny_overrides))
    base = runner.base("student")
    runner.training.train(base)
    model, _ = replace(runner.evaluation, device="meta").load(base.id, torch.bfloat16)
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("meta", torch.bfloat16)}
    assert {(p.device.type, p.dtype) for p in runner.evaluation.load(base.id)[0].parameters()} == {("cpu", torch.float32)}
