"""Planning: which nodes a config's arms need, and what a node's id hashes (so arms share stages and reruns resume).

Plans only, nothing trained: these run in milliseconds, and `make mutants` runs them against every mutant of plan.py.
"""

from conftest import SERVED_TEACHER

from s2d_bench.config import load_config
from s2d_bench.plan import plan


def _ids(*overrides, stage=None):
    return {n.id for n in plan(load_config(None, list(overrides))) if stage is None or n.stage == stage}


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


def test_node_ids_survive_new_settings_at_their_earlier_behaviour(tiny_overrides):
    """Run directories find their nodes by id (and seed stages from it): adding a setting whose default keeps
    the earlier behaviour, or a memory-only one, must not change an id. These ids were written before
    micro_batch_size, gradient_checkpointing and mini_batches existed; a deliberate change updates them here."""
    ids = sorted(n.id for n in plan(load_config(None, [*tiny_overrides, "stages.teacher_rl.steps=6"])))
    assert ids == ["base-student-cbf31b0232f7", "base-teacher-9c894db91ff3", "opd-0f76fc3ce465", "student_rl-2c96e5fe34a3",
                   "student_rl-5fad6c88561b", "teacher_rl-da80bb7be3d3", "warmup-af25b434ca2c"]
    again = plan(load_config(None, [*tiny_overrides, "stages.teacher_rl.steps=6", "stages.opd.micro_batch_size=2",
                                    "stages.teacher_rl.gradient_checkpointing=true"]))
    assert sorted(n.id for n in again) == ids


def test_prompt_thinking_is_a_config_key_and_joins_the_stage_node_ids():
    assert load_config(None, []).prompt.thinking is False
    off = {n.id for n in plan(load_config(None, []))}
    on = {n.id for n in plan(load_config(None, ["prompt.thinking=true"]))}
    assert off & on and all(n.startswith("base-") for n in off & on)  # base models are shared, trained stages are not
    assert len(on - off) == len(off - on) > 0


def test_another_rollout_engine_makes_other_stage_nodes_and_keeps_base_models():
    hf = {n.id for n in plan(load_config(None, []))}
    vllm = {n.id for n in plan(load_config(None, ["rollout.engine=vllm"]))}
    shared = hf & vllm
    assert shared and all(n.startswith("base-") for n in shared)
    assert len(hf - vllm) == len(vllm - hf) > 0


def test_nodes_come_parents_first_each_with_its_parent_teacher_and_arms():
    nodes = plan(load_config(None, ["arms={a: {stages: [teacher_rl, warmup, opd]}, b: {stages: [warmup, student_rl]}}"]))
    by_id = {n.id: n for n in nodes}
    order = {n.id: i for i, n in enumerate(nodes)}
    for n in nodes:
        if n.stage == "base":
            assert n.parent is None and n.teacher is None and n.arms == []
            continue
        assert order[n.parent] < order[n.id] and by_id[n.parent].role == n.role
        if n.teacher is not None:
            assert order[n.teacher] < order[n.id] and by_id[n.teacher].role == "teacher"
    assert sorted(n.stage for n in nodes) == ["base", "base", "opd", "student_rl", "teacher_rl", "warmup", "warmup"]
    rl_teacher = next(n for n in nodes if n.stage == "teacher_rl")
    warm_a = next(n for n in nodes if n.stage == "warmup" and n.arms == ["a"])
    warm_b = next(n for n in nodes if n.stage == "warmup" and n.arms == ["b"])
    assert warm_a.teacher == rl_teacher.id and rl_teacher.role == "teacher"  # a distils the RL teacher
    assert by_id[warm_b.teacher].stage == "base"  # b distils the raw teacher
    student_rl = next(n for n in nodes if n.stage == "student_rl")
    assert student_rl.parent == warm_b.id and student_rl.teacher is None  # GRPO needs no teacher
    assert next(n for n in nodes if n.stage == "opd").parent == warm_a.id


def test_the_teacher_joins_the_ids_of_distillation_nodes_only():
    """Another teacher model changes every node that distils from it (and the teacher's own nodes), never a node
    that trains the student without it."""
    grid = ["arms={d: {stages: [student_rl]}, w: {stages: [warmup]}}"]
    one, two = plan(load_config(None, grid)), plan(load_config(None, [*grid, "teacher.pretrain.steps=3"]))
    changed = {n.stage + ":" + n.role for n in one if n.id not in {m.id for m in two}}
    assert changed == {"base:teacher", "warmup:student"}


def test_backend_and_seed_join_every_stage_id_and_no_base_id():
    torch_ids, trl_ids = _ids(), _ids("backend=trl")
    assert torch_ids & trl_ids == _ids(stage="base")
    assert _ids("seed=1") & torch_ids == _ids(stage="base")


def test_seed_scope_all_gives_each_seed_its_own_base_ids_but_not_to_a_model_given_by_path(tmp_path):
    assert _ids("seed=0", "seed_scope=all", stage="base") != _ids("seed=1", "seed_scope=all", stage="base")
    assert not _ids("seed=0", "seed_scope=all", stage="base") & _ids(stage="base")
    folder = str(tmp_path / "teacher")
    with_path = [f"teacher.path={folder}", "teacher.builder=", "seed_scope=all"]
    teachers = [{n.id for n in plan(load_config(None, [*with_path, f"seed={s}"])) if n.stage == "base" and n.role == "teacher"}
                for s in (0, 1)]
    assert teachers[0] == teachers[1]  # a model from disk is the same model whatever the seed


def test_ids_of_runs_with_the_later_settings_survive_too(tiny_overrides):
    """Run directories of `seed_scope=all`, `rollout.engine=vllm` and `prompt.thinking=true` runs (the published tiny
    grid is one) find their nodes by these ids; a deliberate change updates them here."""
    def ids(*extra):
        return sorted(n.id for n in plan(load_config(None, [*tiny_overrides, "stages.teacher_rl.steps=6", *extra])))

    assert ids("seed_scope=all") == ["base-student-1c039ea74c23", "base-teacher-8880b153185e", "opd-a9a0ce2ae8b2",
                                     "student_rl-760f165531ba", "student_rl-929e1e452946", "teacher_rl-caecc21688a7",
                                     "warmup-4c84e1f2bff1"]
    assert ids("rollout.engine=vllm") == ["base-student-cbf31b0232f7", "base-teacher-9c894db91ff3", "opd-deab9c3951f4",
                                          "student_rl-217ec0f31db9", "student_rl-e259810ddc59", "teacher_rl-8a10021c22c1",
                                          "warmup-c55755c57aaf"]
    assert ids("prompt.thinking=true") == ["base-student-cbf31b0232f7", "base-teacher-9c894db91ff3", "opd-33c30b82c5a6",
                                           "student_rl-1eb5af9907b3", "student_rl-d2c34975c9ee", "teacher_rl-181f1674b6ad",
                                           "warmup-3fae33370a43"]


def test_each_node_carries_the_config_it_is_built_with():
    """Base nodes their model's config, stage nodes the arm's effective stage config (what the runner trains with)."""
    from s2d_bench.config import to_dict

    cfg = load_config(None, ["arms={a: {stages: [warmup, opd], overrides: {opd.lr: 0.005}}}"])
    nodes = {n.stage + n.role: n for n in plan(cfg)}
    assert nodes["baseteacher"].cfg == to_dict(cfg.teacher) and nodes["basestudent"].cfg == to_dict(cfg.student)
    assert nodes["opdstudent"].cfg == to_dict(cfg.stage_config("a", "opd")) and nodes["opdstudent"].cfg["lr"] == 0.005
    assert nodes["warmupstudent"].cfg == to_dict(cfg.stages.warmup)
    assert nodes["opdstudent"].settings == cfg.stage_config("a", "opd") and nodes["warmupstudent"].settings == cfg.stages.warmup
    assert nodes["baseteacher"].settings is None  # a base model has no stage config


def test_a_node_seed_comes_from_its_id_unless_given():
    from s2d_bench.identity import node_seed
    from s2d_bench.plan import Node

    assert Node("opd-0f76fc3ce465", "opd", "student").seed == node_seed("opd-0f76fc3ce465") == 0x0f76fc3c
    assert Node("opd-0f76fc3ce465", "opd", "student", seed=7).seed == 7  # a stand-in node (cross_swap's reseeded one)


def _graph():
    from s2d_bench.plan import arm_paths

    cfg = load_config(None, ["arms={a: {stages: [teacher_rl, warmup, opd]}, b: {stages: [warmup, student_rl]}, c: {stages: [teacher_rl]}}"])
    nodes = {n.id: n for n in plan(cfg)}
    of = {(n.stage, tuple(n.arms)): n.id for n in nodes.values()}
    return nodes, of, arm_paths(nodes, ["b", "a", "c"])


def test_arm_paths_rows_and_base_nodes_follow_the_plan():
    from s2d_bench.plan import arm_rows, base_node

    nodes, of, paths = _graph()
    rl = of["teacher_rl", ("a", "c")]
    assert list(paths) == ["b", "a", "c"]  # in the order asked
    assert paths == {"a": [rl, of["warmup", ("a",)], of["opd", ("a",)]], "b": [of["warmup", ("b",)], of["student_rl", ("b",)]], "c": [rl]}
    student, teacher = base_node(nodes, "student"), base_node(nodes, "teacher")
    assert (student.stage, student.role, teacher.stage, teacher.role) == ("base", "student", "base", "teacher")
    rows = arm_rows(nodes, ["a", "c"])
    assert rows == {"a": [(student.id, "base"), (rl, "teacher_rl"), (of["warmup", ("a",)], "warmup"), (of["opd", ("a",)], "opd")],
                    "c": [(student.id, "base"), (rl, "teacher_rl")]}  # an arm that trains only the teacher still starts at the student


def test_ancestors_and_the_label_budget_follow_parents_and_teachers_each_once():
    from s2d_bench.plan import ancestors, base_node, labeled_consumed, labeled_per_stage

    nodes, of, _ = _graph()
    opd = of["opd", ("a",)]
    line = ancestors(nodes, opd)
    assert line[0].id == opd and len(line) == len({n.id for n in line})
    assert sorted(n.stage + "/" + n.role for n in line) == ["base/student", "base/teacher", "opd/student", "teacher_rl/teacher", "warmup/student"]
    teacher = base_node(nodes, "teacher")
    assert ancestors(nodes, teacher.id) == [teacher]
    info = {"teacher_rl": {"labeled_draws": 12, "labeled_ids": ["p1", "p2", "p3"]},
            "warmup": {"labeled_draws": 0, "labeled_ids": []},
            "opd": {"labeled_draws": 5, "labeled_ids": ["p3", "p4"]},
            "student_rl": {"labeled_draws": 7, "labeled_ids": ["p9"]},
            "base": {"labeled_draws": 0, "labeled_ids": []}}
    read = lambda n: info[n.stage]  # noqa: E731 - a stage.json per stage
    assert labeled_per_stage(nodes, opd, read) == {"opd": 5, "warmup": 0, "teacher_rl": 12}
    assert labeled_consumed(nodes, opd, read) == (17, 4)  # p3 drawn by both stages counts once among the distinct problems
    assert labeled_per_stage(nodes, of["student_rl", ("b",)], read) == {"student_rl": 7, "warmup": 0}
    assert labeled_consumed(nodes, of["student_rl", ("b",)], read) == (7, 1)  # the raw teacher's base node spent nothing
    twice = {n.id: n for n in plan(load_config(None, ["arms={a: {stages: [opd, opd]}}"]))}
    last = list(twice)[-1]
    assert labeled_per_stage(twice, last, read) == {"opd": 10}  # a stage run twice in a line: both runs' draws


def test_warmups_on_a_served_teacher_draw_alike_across_students_and_learning_rates_not_across_seeds():
    """A served teacher's warmups share their draws (one seed per teacher, run seed and step sizes), so every arm reads
    the teacher rollouts the first drew; a local teacher's warmups keep the seed of their id."""
    from s2d_bench.identity import node_seed

    arms = "arms={a: {stages: [warmup]}, b: {stages: [warmup], overrides: {warmup.lr: 3.0e-4}}, c: {stages: [warmup], overrides: {warmup.steps: 7}}}"
    served = [*SERVED_TEACHER, arms]

    def warmups(overrides):
        return {n.arms[0]: n for n in plan(load_config(None, overrides)) if n.stage == "warmup"}

    nodes = warmups(served)
    assert nodes["a"].id != nodes["b"].id and nodes["a"].seed == nodes["b"].seed
    assert nodes["c"].seed != nodes["a"].seed  # other steps: other draws
    assert warmups([*served, "seed=1"])["a"].seed != nodes["a"].seed
    assert warmups([*served, "teacher.served_model=u"])["a"].seed != nodes["a"].seed
    local = warmups([arms])
    assert local["a"].seed != local["b"].seed and all(n.seed == node_seed(n.id) for n in local.values())


def test_base_models_come_teacher_first_unless_the_teacher_is_served():
    """A served teacher is evaluated with the student's tokenizer, so the student's base is built first; a local pair
    keeps the teacher first (the order earlier run directories were built in). The draw seed of a served warmup is
    pinned: a grid continued by a later version draws what its first arms drew (and reads their cached rollouts)."""
    served = plan(load_config(None, [*SERVED_TEACHER, "arms={a: {stages: [warmup]}}"]))
    assert [(n.stage, n.role) for n in served[:2]] == [("base", "student"), ("base", "teacher")]
    assert served[2].stage == "warmup" and served[2].seed == 3663448147
    local = plan(load_config(None, ["arms={a: {stages: [warmup]}}"]))
    assert [(n.stage, n.role) for n in local[:2]] == [("base", "teacher"), ("base", "student")]
