import pytest

from s2d_bench.config import GRPOConfig, load_config
from s2d_bench.errors import UserError


def test_default_config_loads_with_the_three_arms():
    cfg = load_config()
    assert set(cfg.arms) == {"direct-grpo", "bridge", "full"}
    assert cfg.arms["full"].stages == ["teacher_rl", "warmup", "opd", "student_rl"]
    assert cfg.eval.samples == 16


def test_overrides_are_typed_and_reach_nested_fields():
    cfg = load_config(None, ["seed=3", "stages.opd.lr=1e-4", "eval.samples=8", "stages.opd.estimator=sampled"])
    assert cfg.seed == 3
    assert cfg.stages.opd.lr == pytest.approx(1e-4)  # YAML reads '1e-4' as a string; the field type wins
    assert isinstance(cfg.eval.samples, int) and cfg.eval.samples == 8
    assert cfg.stages.opd.estimator == "sampled"


def test_arm_overrides_apply_only_inside_their_arm():
    cfg = load_config(None, ["arms.direct-grpo.overrides.student_rl.steps=7"])
    assert cfg.stage_config("direct-grpo", "student_rl").steps == 7
    assert cfg.stage_config("full", "student_rl").steps == cfg.stages.student_rl.steps != 7


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(UserError, match=r"unknown key 'config.stages.opd.lrr'.*Did you mean 'lr'"):
        load_config(None, ["stages.opd.lrr=1"])


def test_unknown_top_level_key_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seeds: 3\n")
    with pytest.raises(UserError, match="Did you mean 'seed'"):
        load_config(str(path))


def test_missing_config_file_names_the_shipped_ones():
    with pytest.raises(UserError, match="not found.*tiny"):
        load_config("no/such/file.yaml")


def test_bad_values_name_the_fix():
    with pytest.raises(UserError, match="must be a number"):
        load_config(None, ["stages.opd.lr=fast"])
    with pytest.raises(UserError, match="must be an integer"):
        load_config(None, ["eval.samples=2.5"])
    with pytest.raises(UserError, match="samples_per_prompt >= 2"):
        GRPOConfig(samples_per_prompt=1)


@pytest.mark.parametrize("override, message", [
    ("eval.samples=true", "must be a number"),  # a YAML boolean is not 1
    ("stages.opd.lr=.inf", "finite"),
    ("eval.temperature=.nan", "finite"),
    ("stages.opd.max_new_tokens=0", "max_new_tokens must be >= 1"),
    ("stages.teacher_rl.max_new_tokens=-1", "max_new_tokens must be >= 1"),
    ("eval.max_new_tokens=0", "max_new_tokens must be >= 1"),
])
def test_values_that_would_run_wrong_are_refused_when_the_config_loads(override, message):
    with pytest.raises(UserError, match=message):
        load_config(None, [override])


def test_an_exponent_without_a_dot_is_a_number():
    assert load_config(None, ["task.n_unlabeled=2e4"]).task.n_unlabeled == 20000  # YAML 1.1 reads 2e4 as a string
    assert load_config(None, ["stages.opd.lr=1e-4"]).stages.opd.lr == pytest.approx(1e-4)
