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


# ---------------------------------------------------------------- a config file as a newcomer writes one (issue: a path without traps)


def test_a_file_that_is_not_utf8_is_one_line_naming_the_file_and_the_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.yaml is not UTF-8 text \(byte 9: b'\\xe9'\); save it as UTF-8"):
        load_config(str(path))


def test_a_key_written_twice_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("seed: 1\nstages:\n  opd:\n    lr: 1.0e-3\n    lr: 1.0e-4\n")
    with pytest.raises(UserError, match=r"key 'lr' is written twice \(lines 4 and 5\)"):
        load_config(str(path))


def test_relative_input_paths_resolve_from_the_yaml_folder_and_hub_ids_stay_hub_ids(tmp_path, monkeypatch):
    (tmp_path / "cfgs" / "models" / "teacher").mkdir(parents=True)
    (tmp_path / "cfgs" / "data").mkdir()
    path = tmp_path / "cfgs" / "pair.yaml"
    path.write_text("teacher: {path: models/teacher}\nstudent: {path: Qwen/Qwen3-1.7B}\ntask: {data_dir: ./data}\n")
    monkeypatch.chdir(tmp_path)  # elsewhere: the folder the command runs in must not matter
    cfg = load_config(str(path))
    assert cfg.teacher.path == str(tmp_path / "cfgs" / "models" / "teacher")
    assert cfg.student.path == "Qwen/Qwen3-1.7B"
    assert cfg.task.data_dir == str(tmp_path / "cfgs" / "data")
    assert load_config(str(path), ["teacher.path=elsewhere/t"]).teacher.path == "elsewhere/t"  # an override is the shell's


@pytest.mark.parametrize("yaml_text, overrides", [
    ("student: {path: /m/s, pretrain: {steps: 100}}\n", []),
    ("student: {path: /m/s}\n", ["student.pretrain.steps=100"]),
])
def test_a_pretrain_setting_beside_a_model_path_is_refused_not_ignored(tmp_path, yaml_text, overrides):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(UserError, match=r"^student: a model from a path is used as it is, so student.pretrain would be ignored"):
        load_config(str(path), overrides)
    assert load_config(None, ["student.builder=", "student.path=/m/s"]).student.path == "/m/s"  # the shipped block is not the user's


@pytest.mark.parametrize("overrides, message", [
    (["teacher.builder="], "teacher: set exactly one of builder"),
    (["stages.opd.lr=0"], "stages.opd: steps >= 0, batch_size > 0, lr > 0"),
    (["student.pretrain.lr=0"], "student.pretrain: steps >= 0, batch_size > 0, lr > 0"),
    (["stages.student_rl.samples_per_prompt=1"], "stages.student_rl: GRPO needs samples_per_prompt >= 2"),
    (["arms.full.overrides.opd.estimator=exact"], "arms.full.overrides.opd: estimator must be"),
])
def test_every_check_names_its_role_stage_or_arm(overrides, message):
    with pytest.raises(UserError) as err:
        load_config(None, overrides).stage_config("full", "opd")
    assert str(err.value).startswith(message), str(err.value)


def test_config_show_prints_each_key_with_value_default_and_help():
    from click.testing import CliRunner

    from s2d_bench.cli import main

    out = CliRunner().invoke(main, ["config", "show", "stages.opd", "stages.opd.lr=5e-4"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[lines.index("stages.opd.lr = 0.0005   (default 0.001)") + 1] == "    AdamW learning rate"
    assert "stages.opd.steps = 250" in lines and all(line.startswith(("stages.opd.", "    ")) for line in lines)
    changed = CliRunner().invoke(main, ["config", "show", "--changed"]).output.splitlines()
    assert "jobs = 2   (default 1)" in changed and not any(line.startswith("stages.opd.") for line in changed)
    missing = CliRunner().invoke(main, ["config", "show", "stages.opdd"])
    assert missing.exit_code == 2 and "Did you mean 'stages.opd'?" in missing.output
