import pytest

from s2d_bench.ablations import ablation_config
from s2d_bench.config import load_config
from s2d_bench.errors import UserError
from s2d_bench.pipeline import plan


def test_drop_warmup_runs_the_full_arm_and_the_ablated_one():
    cfg = ablation_config(load_config(), ["warmup"], [])
    assert cfg.arms["full"].stages == ["teacher_rl", "warmup", "opd", "student_rl"]
    assert cfg.arms["no-warmup"].stages == ["teacher_rl", "opd", "student_rl"]
    assert set(cfg.arms) == {"full", "no-warmup"}


def test_all_builds_the_component_grid_with_matched_replay_and_the_configs_direct_grpo():
    base = load_config(None, ["stages.student_rl.steps=30", "stages.student_rl.updates_per_batch=2"])
    cfg = ablation_config(base, [], [], everything=True)
    assert set(cfg.arms) == {"full", "no-teacher-rl", "no-warmup", "no-opd", "no-student-rl", "direct-grpo", "replay"}
    assert cfg.arms["replay"].stages == ["teacher_rl", "warmup", "opd", "replay"]
    assert cfg.stage_config("replay", "replay").steps == 60  # stage 3's updates, no labels
    assert cfg.arms["direct-grpo"].overrides == {"student_rl.steps": 480, "student_rl.lr": 3e-4}  # the config's own baseline


def test_the_grid_shares_stages_across_arms():
    cfg = ablation_config(load_config(), [], [], everything=True)
    nodes = [n for n in plan(cfg) if n.stage != "base"]
    from_scratch = sum(len(arm.stages) for arm in cfg.arms.values())
    assert from_scratch == 21 and len(nodes) == 12
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
