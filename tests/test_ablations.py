import pytest

from s2d_bench.ablations import ablation_config
from s2d_bench.config import load_config
from s2d_bench.errors import UserError
from s2d_bench.plan import plan


def test_drop_warmup_runs_the_full_arm_and_the_ablated_one():
    cfg = ablation_config(load_config(), ["warmup"], [])
    assert cfg.arms["full"].stages == ["teacher_rl", "warmup", "opd", "student_rl"]
    assert cfg.arms["no-warmup"].stages == ["teacher_rl", "opd", "student_rl"]
    assert set(cfg.arms) == {"full", "no-warmup"}


def test_all_builds_the_component_grid_with_matched_replay_and_the_configs_direct_grpo():
    base = load_config(None, ["stages.student_rl.steps=30", "stages.student_rl.updates_per_batch=2"])
    cfg = ablation_config(base, [], [], everything=True)
    assert set(cfg.arms) == {"full", "no-teacher-rl", "no-warmup", "no-opd", "no-student-rl", "direct-grpo", "replay", "raw-bridge"}
    assert cfg.arms["raw-bridge"].stages == ["warmup", "opd"]  # the raw teacher's bridge: no stage 1, no student GRPO
    assert cfg.arms["replay"].stages == ["teacher_rl", "warmup", "opd", "replay"]
    assert cfg.stage_config("replay", "replay").steps == 60  # stage 3's updates, no labels
    assert cfg.arms["direct-grpo"].overrides == {"student_rl.steps": 480, "student_rl.lr": 3e-4}  # the config's own baseline


def test_the_grid_shares_stages_across_arms():
    cfg = ablation_config(load_config(), [], [], everything=True)
    nodes = [n for n in plan(cfg) if n.stage != "base"]
    from_scratch = sum(len(arm.stages) for arm in cfg.arms.values())
    assert from_scratch == 23 and len(nodes) == 12  # raw-bridge is no-teacher-rl's prefix: no new stage
    teacher_rl = [n for n in nodes if n.stage == "teacher_rl"]
    assert len(teacher_rl) == 1
    assert sorted(teacher_rl[0].arms) == ["full", "no-opd", "no-student-rl", "no-warmup", "replay"]


@pytest.mark.parametrize(("drops", "baselines", "message"), [
    (["warmpu"], [], "Did you mean 'warmup'"),
    ([], ["replya"], "Did you mean 'replay'"),
    ([], [], "nothing to ablate"),
])
def test_bad_ablation_requests_fail_clearly(drops, baselines, message):
    with pytest.raises(UserError, match=message):
        ablation_config(load_config(), drops, baselines)


def test_dropping_a_stage_the_full_arm_lacks_is_an_error():
    cfg = load_config(None, ["arms={full: {stages: [teacher_rl, warmup, opd]}}"])
    with pytest.raises(UserError, match="cannot drop student_rl"):
        ablation_config(cfg, ["student-rl"], [])


def test_a_drop_keeps_the_full_arms_settings_of_the_stages_it_keeps_and_only_those():
    cfg = load_config(None, ["arms={full: {stages: [teacher_rl, warmup, opd, student_rl], overrides: "
                             "{warmup.steps: 7, opd.lr: 0.002, student_rl.steps: 9, student_rl.updates_per_batch: 3}}}"])
    out = ablation_config(cfg, ["warmup"], ["replay", "direct-grpo"])
    assert out.arms["no-warmup"].stages == ["teacher_rl", "opd", "student_rl"]
    assert out.arms["no-warmup"].overrides == {"opd.lr": 0.002, "student_rl.steps": 9, "student_rl.updates_per_batch": 3}
    # replay: stage 3 becomes as many label-free updates as the full arm's stage 3 takes (9 x 3), other settings kept
    assert out.arms["replay"].stages == ["teacher_rl", "warmup", "opd", "replay"]
    assert out.arms["replay"].overrides == {"warmup.steps": 7, "opd.lr": 0.002, "replay.steps": 27}
    assert out.arms["direct-grpo"].stages == ["student_rl"]
    assert out.arms["full"] == cfg.arms["full"]


def test_a_config_without_a_full_arm_ablates_the_four_stages_and_its_own_stage_settings():
    cfg = load_config(None, ["arms={only: {stages: [warmup]}}", "stages.student_rl.steps=5", "stages.student_rl.updates_per_batch=2"])
    out = ablation_config(cfg, ["opd"], ["replay", "direct-grpo"])
    assert out.arms["full"].stages == ["teacher_rl", "warmup", "opd", "student_rl"] and "only" not in out.arms
    assert out.arms["no-opd"].stages == ["teacher_rl", "warmup", "student_rl"]
    assert out.arms["replay"].overrides == {"replay.steps": 10}
    assert out.arms["direct-grpo"].stages == ["student_rl"] and out.arms["direct-grpo"].overrides == {}


def test_dropping_the_only_stage_or_replaying_without_stage_3_is_refused():
    with pytest.raises(UserError, match="dropping warmup leaves the full arm with no stage"):
        ablation_config(load_config(None, ["arms={full: {stages: [warmup]}}"]), ["warmup"], [])
    with pytest.raises(UserError, match="the replay control replaces student_rl, which the full arm does not run"):
        ablation_config(load_config(None, ["arms={full: {stages: [teacher_rl, warmup]}}"]), [], ["replay"])


def test_a_sweep_is_an_arm_per_value_sharing_every_stage_upstream_of_the_key():
    """--sweep stages.opd.estimator=full,topk: two arms; teacher_rl and warmup are one node each, and only opd and
    the student GRPO after it are trained per value."""
    cfg = ablation_config(load_config(), ["warmup"], [], sweeps=["stages.opd.estimator=topk,sampled"])
    assert set(cfg.arms) == {"full", "no-warmup", "opd.estimator=topk", "opd.estimator=sampled"}
    assert cfg.stage_config("opd.estimator=topk", "opd").estimator == "topk"
    assert cfg.stage_config("opd.estimator=sampled", "opd").estimator == "sampled"
    nodes = [n for n in plan(cfg) if n.stage != "base"]
    per_stage = {s: len([n for n in nodes if n.stage == s]) for s in ("teacher_rl", "warmup", "opd", "student_rl")}
    # full, the two sweep arms and no-warmup: one teacher_rl, one warmup; opd and student_rl for full, topk, sampled, no-warmup
    assert per_stage == {"teacher_rl": 1, "warmup": 1, "opd": 4, "student_rl": 4}
    from s2d_bench.preflight import check_config

    check_config(cfg)  # the swept values are checked as any arm override is


@pytest.mark.parametrize("sweep, message", [
    ("rollout.engine=hf,vllm", "a sweep varies a stage setting"),
    ("stages.opd.estimator", "not of the form"),
    ("stages.replay.steps=1,2", "the full arm does not run replay"),
    ("stages.opd.lr=0.1,0.1", "given twice"),
])
def test_bad_sweeps_are_refused_with_the_form_they_need(sweep, message):
    with pytest.raises(UserError, match=message):
        ablation_config(load_config(), [], [], sweeps=[sweep])


def test_cache_savings_counts_each_shared_stage_once_against_every_arm_alone():
    """Two seeds' runners: arms a=[n1, n2] and b=[n1, n3] share n1, so each seed trains 3 stages, not 4, and the
    seconds saved are n1's once per seed."""
    from types import SimpleNamespace

    from s2d_bench.ablations import cache_savings

    def runner(seconds):
        nodes = {i: SimpleNamespace(id=i) for i in seconds}
        return SimpleNamespace(arm_paths=lambda: {"a": ["n1", "n2"], "b": ["n1", "n3"]}, nodes=nodes,
                               dir=SimpleNamespace(stage_info=lambda node: {"seconds": seconds[node.id]}))

    saved = cache_savings([runner({"n1": 10.0, "n2": 2.0, "n3": 3.0}), runner({"n1": 20.0, "n2": 4.0, "n3": 6.0})])
    assert saved == {"stages_alone": 8, "stages_run": 6, "train_seconds_alone": 10 + 2 + 10 + 3 + 20 + 4 + 20 + 6,
                     "train_seconds_run": 15.0 + 30.0}
    assert cache_savings([]) == {"stages_alone": 0, "stages_run": 0, "train_seconds_alone": 0.0, "train_seconds_run": 0.0}


def _refusal(call) -> str:  # noqa: ANN001
    with pytest.raises(UserError) as err:
        call()
    return str(err.value)


def test_each_refusal_says_what_was_asked_and_what_the_full_arm_runs():
    """The whole message, not a fragment: it is what a user reads to fix the command line."""
    three = load_config(None, ["arms={full: {stages: [teacher_rl, warmup, opd]}}"])
    assert _refusal(lambda: ablation_config(three, ["student-rl"], [])) == \
        "cannot drop student_rl: the full arm runs teacher_rl, warmup, opd"
    assert _refusal(lambda: ablation_config(three, [], ["replay"])) == \
        "the replay control replaces student_rl, which the full arm does not run"
    rl_only = load_config(None, ["arms={full: {stages: [teacher_rl, student_rl]}}"])
    assert _refusal(lambda: ablation_config(rl_only, [], ["raw-bridge"])) == \
        "the raw-teacher bridge keeps no stage of the full arm (teacher_rl, student_rl)"
    assert _refusal(lambda: ablation_config(three, [], [], sweeps=["stages.student_rl.lr=1,2"])) == \
        "--sweep stages.student_rl.lr: the full arm does not run student_rl (teacher_rl, warmup, opd)"
    assert _refusal(lambda: ablation_config(three, [], [])) == \
        "nothing to ablate: give --drop STAGE (repeatable), --baseline NAME, --sweep KEY=V1,V2 or --all"
    assert _refusal(lambda: ablation_config(three, ["zzzz"], [])) == \
        "unknown stage to drop 'zzzz'. Known: teacher-rl, warmup, opd, student-rl"
    assert _refusal(lambda: ablation_config(three, [], ["zzzz"])) == \
        "unknown baseline 'zzzz'. Known: direct-grpo, replay, raw-bridge"
    assert _refusal(lambda: ablation_config(three, [], [], sweeps=["rollout.engine=hf,vllm"])) == (
        "--sweep 'rollout.engine': a sweep varies a stage setting (stages.STAGE.FIELD), so each value is an arm sharing "
        "every stage upstream of it; run-level settings (backend, rollout, eval, ...) differ per run: give them as "
        "overrides of separate runs")


def test_the_raw_bridge_keeps_the_full_arms_bridge_settings_and_no_stage_1_or_3_setting():
    cfg = load_config(None, ["arms={full: {stages: [teacher_rl, warmup, opd, student_rl], overrides: "
                             "{teacher_rl.steps: 3, warmup.steps: 7, opd.lr: 0.002, student_rl.steps: 9}}}"])
    bridge = ablation_config(cfg, [], ["raw-bridge"]).arms["raw-bridge"]
    assert bridge.stages == ["warmup", "opd"]
    assert bridge.overrides == {"warmup.steps": 7, "opd.lr": 0.002}


@pytest.mark.parametrize("text, parsed", [
    ("stages.opd.estimator=full,topk", ("opd", "estimator", ["full", "topk"])),
    ("stages.warmup.lr=0.001, 0.002", ("warmup", "lr", [0.001, 0.002])),  # YAML values: numbers are numbers
    ("stages.opd.note=a=b,c", ("opd", "note", ["a=b", "c"])),  # the first '=' ends the key
])
def test_a_sweep_is_parsed_into_stage_field_and_yaml_values(text, parsed):
    from s2d_bench.ablations import parse_sweep

    assert parse_sweep(text) == parsed


@pytest.mark.parametrize("text", ["stages.opd.estimator=", "stages.opd.estimator= ", "stages.opd.estimator",
                                  "stages.opd=full", "rollout.engine.kind=hf", "stages.opd.estimator.x=1"])
def test_a_sweep_without_values_or_not_naming_one_stage_field_is_refused(text):
    from s2d_bench.ablations import parse_sweep

    with pytest.raises(UserError, match="--sweep"):
        parse_sweep(text)
