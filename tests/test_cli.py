from click.testing import CliRunner

from s2d_bench.cli import main


def _run(*args):
    return CliRunner().invoke(main, list(args))


def test_ls_lists_what_is_registered():
    out = _run("ls")
    assert out.exit_code == 0
    for name in ("torch", "teacher_rl", "warmup", "opd", "student_rl", "add3mix", "tiny-qwen3-teacher", "tiny"):
        assert name in out.output


def test_user_errors_are_one_line_with_exit_status_2():
    cases = {
        ("run", "stages.opd.lrr=1"): "Did you mean 'lr'",
        ("run", "--config", "missing.yaml"): "not found",
        ("run", "backend=torhc"): "Did you mean 'torch'",
        ("run", "not-an-override"): "key.sub=value",
    }
    for args, hint in cases.items():
        out = _run(*args)
        assert out.exit_code == 2, (args, out.output)
        assert hint in out.output
        assert "Traceback" not in out.output
        assert len(out.output.strip().splitlines()) == 1


def test_run_prints_the_table(tiny_overrides):
    out = _run("run", *tiny_overrides)
    assert out.exit_code == 0, out.output
    assert "avg@2" in out.output and "direct-grpo" in out.output and "student_rl" in out.output
