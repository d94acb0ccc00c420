import pytest
from click.testing import CliRunner

from s2d_bench.cli import main


def _run(*args):
    return CliRunner().invoke(main, list(args))


def test_ls_lists_what_is_registered():
    out = _run("ls")
    assert out.exit_code == 0
    for name in ("torch", "teacher_rl", "warmup", "opd", "student_rl", "add3mix", "tiny-qwen3-teacher", "tiny", "math500", "aime25", "math_verify", "vllm"):
        assert name in out.output


def test_user_errors_are_one_line_with_exit_status_2():
    cases = {
        ("run", "stages.opd.lrr=1"): "Did you mean 'lr'",
        ("run", "--config", "missing.yaml"): "not found",
        ("run", "backend=torhc"): "Did you mean 'torch'",
        ("run", "not-an-override"): "key.sub=value",
        ("ablate",): "nothing to ablate",
        ("ablate", "--drop", "warmpu"): "Did you mean 'warmup'",
        ("ablate", "--all", "--seeds", "0"): "--seeds must be >= 1",
        ("leaderboard", "--suite", "nope"): "no results store at",  # a mistyped --store is not an empty leaderboard
        ("leaderboard", "--format", "pdf"): "no results store at",
    }
    for args, hint in cases.items():
        out = _run(*args)
        assert out.exit_code == 2, (args, out.output)
        assert hint in out.output
        assert "Traceback" not in out.output
        assert len(out.output.strip().splitlines()) == 1


def test_run_prints_the_table(tiny_overrides):
    before = _run("plan", *tiny_overrides)
    assert before.exit_code == 0, before.output
    out = _run("run", *tiny_overrides)
    assert out.exit_code == 0, out.output
    assert "avg@2" in out.output and "direct-grpo" in out.output and "student_rl" in out.output
    after = _run("plan", *tiny_overrides)  # the same nodes, now on disk
    rows = lambda text: [line.split() for line in text.splitlines() if line.startswith("  base-") or line.startswith("  student_rl-")]  # noqa: E731
    assert {r[2] for r in rows(before.output)} == {"to"} and {r[2] for r in rows(after.output)} == {"built"}
    assert [r[0] for r in rows(before.output)] == [r[0] for r in rows(after.output)] and len(rows(after.output)) == 4


def test_plan_estimates_a_paper_config_offline_phase_by_phase_and_names_what_to_change(monkeypatch):
    """No weights, no hub, no process group: the shipped shapes of the paper config's models, every stage and every
    phase after it on the 8 GPUs its header documents; unbounded evaluation batches are refused with the fix."""
    from conftest import SHARED_DATA

    monkeypatch.setenv("S2D_DATA_DIR", str(SHARED_DATA))
    out = _run("plan", "--config", "paper-qwen3", "--world", "8")
    assert out.exit_code == 0, out.output
    assert "teacher 8,190.7M params, student 1,720.6M params" in out.output and "ZeRO-2, 8 rank(s)" in out.output
    phases = [line.split()[:3] for line in out.output.splitlines() if line.startswith("    eval ") or line.startswith("    c2 ")]
    assert phases == [["eval", b, role] for b in ("math500", "aime24", "aime25") for role in ("student", "teacher")] + [["c2", "both", "7"]]
    over = _run("plan", "--config", "paper-qwen3", "--world", "8", "eval.max_batch_tokens=0")
    assert over.exit_code == 2 and "eval math500 (teacher) needs about 882.4 GiB a rank: set eval.max_batch_tokens <= 278,528" in over.output
    assert _run("plan", "--world", "0").exit_code == 2


def test_eval_writes_results_and_every_completion(tmp_path):
    import json

    from s2d_bench.models.builders import save, tiny_qwen3_student

    model, tok = tiny_qwen3_student()
    save(model, tok, tmp_path / "model")
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"id": f"q{i}", "problem": f"What is {i}+1?", "answer": str(i + 1)} for i in range(3)]
    (data / "math500.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "aime24.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    out = _run("eval", "--model", str(tmp_path / "model"), "--tasks", "math500,aime24", "--data", str(data),
               "--samples", "2", "--max-new-tokens", "4", "--out", str(tmp_path / "ev"))
    assert out.exit_code == 0, out.output
    assert "avg@2" in out.output and "aime24" in out.output
    [folder] = (tmp_path / "ev").iterdir()  # <out>/<model>-<hash of the options>/<benchmark>/
    assert folder.name.startswith("model-")
    assert out.output.strip().splitlines()[-1] == f"results: {folder / 'math500' / 'results.json'}, {folder / 'aime24' / 'results.json'}"
    record = json.loads((folder / "math500" / "results.json").read_text())
    assert (record["n"], record["k"], record["grader"], record["audit_grader"]) == (3, 2, "math_verify", "hendrycks")
    lines = [json.loads(x) for x in (folder / "math500" / "completions.jsonl").read_text().splitlines()]
    assert [(x["id"], x["sample"]) for x in lines] == [(f"q{i}", j) for i in range(3) for j in range(2)]
    assert all({"text", "extracted", "correct", "tokens", "grader"} <= x.keys() for x in lines)
    board = _run("leaderboard", "--suite", "eval", "--format", "csv")  # the records reached the store
    assert board.exit_code == 0, board.output
    assert board.output.splitlines()[0].startswith("model,aime24 avg@2") and str(tmp_path / "model") in board.output
    other, tok = tiny_qwen3_student(seed=1)
    save(other, tok, tmp_path / "other")
    again = _run("eval", "--model", str(tmp_path / "other"), "--tasks", "math500", "--data", str(data / "math500.jsonl"),
                 "--samples", "2", "--max-new-tokens", "4", "--out", str(tmp_path / "ev"))
    assert again.exit_code == 0, again.output
    kept = sorted(p.relative_to(tmp_path / "ev").parts for p in (tmp_path / "ev").glob("*/*/results.json"))
    assert len(kept) == 3 and {name for _, name, _ in kept} == {"math500", "aime24"}  # the second model overwrote nothing
    assert json.loads((folder / "math500" / "results.json").read_text()) == record
    bounded = _run("eval", "--model", str(tmp_path / "model"), "--tasks", "math500", "--data", str(data), "--samples", "2",
                   "--max-new-tokens", "4", "--max-batch-tokens", "1", "--out", str(tmp_path / "bounded"))
    assert bounded.exit_code == 0, bounded.output  # one problem a batch: the same completions, in the same folder name
    assert (tmp_path / "bounded" / folder.name / "math500" / "completions.jsonl").read_text() == \
        (folder / "math500" / "completions.jsonl").read_text()
    browse = _run("browse", str(tmp_path / "ev"))
    assert browse.exit_code == 0, browse.output
    assert len([line for line in browse.output.splitlines() if line.endswith(".html")]) == 4  # the index and one page each


def test_eval_user_errors(tmp_path):
    (tmp_path / "math500.jsonl").write_text('{"id": "a", "problem": "p", "answer": "1"}\n')
    cases = {
        ("eval", "--model", str(tmp_path / "nope"), "--tasks", "math500", "--data", str(tmp_path), "--engine", "vllm"): "pip install 's2d-bench[vllm]'",
        ("eval", "--model", str(tmp_path / "nope"), "--tasks", "math500", "--data", str(tmp_path)): "does not exist",
        ("eval", "--model", str(tmp_path / "nope"), "--dtype", "fp8"): "use auto, float32",
        ("eval", "--model", str(tmp_path / "nope"), "--tasks", "math501", "--data", str(tmp_path)): "Did you mean 'math500'",
        ("eval", "--model", str(tmp_path / "nope"), "--tasks", "aime24", "--data", str(tmp_path)): "aime24.jsonl",
    }
    for args, hint in cases.items():
        out = _run(*args)
        assert out.exit_code == 2, (args, out.output)
        assert hint in out.output and "Traceback" not in out.output


def test_ablate_then_leaderboard_and_publish(tiny_overrides, tmp_path):
    out = _run("ablate", "--drop", "warmup", *tiny_overrides)
    assert out.exit_code == 0, out.output
    assert "| no-warmup" in out.output and "Δ vs full" in out.output and "stages trained 6 instead of 7" in out.output
    csv = _run("leaderboard", "--format", "csv")
    assert csv.exit_code == 0 and csv.output.splitlines()[0].startswith("arm,")
    assert {line.split(",")[0] for line in csv.output.splitlines()[1:]} == {"full", "no-warmup"}
    published = _run("leaderboard", "publish", "--out", str(tmp_path / "boards"))
    assert published.exit_code == 0, published.output
    assert sorted(p.name for p in (tmp_path / "boards").iterdir()) == ["tiny-ablation.png", "tiny.csv", "tiny.html", "tiny.md", "tiny.png", "tiny.tex"]


@pytest.mark.parametrize("args, exit_code, says", [
    (["ls"], 0, "backends:"),
    (["browse", "/no/such/run"], 2, "is not a folder"),
    (["run", "nosuch.key=1"], 2, "unknown key 'nosuch'"),
    (["ablate", "--drop", "nosuch"], 2, "unknown stage to drop"),
    (["plan", "nosuch=1"], 2, "unknown key"),
    (["eval", "--model", "/no/model", "--tasks", "math500,nosuch"], 2, "unknown benchmark 'nosuch'"),
])
def test_a_listing_or_a_refused_command_answers_before_the_heavy_stack_loads(args, exit_code, says):
    """`s2d-bench ls`, `browse` of a folder that is not there and a misspelt key or benchmark took 5-7 s (torch and
    transformers loaded before the arguments were looked at); each answers from registries, the config and a path check
    alone: torch, transformers and pandas are never imported."""
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from s2d_bench.cli import main; "
            f"result = CliRunner().invoke(main, {args!r}); "
            "print(result.exit_code, sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules)); print(result.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    first, _, output = out.stdout.partition("\n")
    assert first == f"{exit_code} []" and says in output, out.stdout[-2000:] + out.stderr[-2000:]
