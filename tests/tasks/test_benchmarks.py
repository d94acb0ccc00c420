import json

import pytest
from conftest import SHARED_DATA

from s2d_bench.errors import UserError
from s2d_bench.tasks import BENCHMARKS
from s2d_bench.tasks.benchmarks import _record_to_problem, load_problems


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_local_jsonl_loads_with_template_subject_and_level(tmp_path):
    f = _write(tmp_path / "m.jsonl", [
        {"id": "a", "problem": "What is $1+1$?", "answer": "2", "subject": "Algebra", "level": 1},
        {"id": "b", "problem": "Half of one?", "answer": "\\frac{1}{2}", "subject": "Prealgebra", "level": 2},
    ])
    problems = load_problems(BENCHMARKS.get("math500"), str(f))
    assert [p.id for p in problems] == ["a", "b"]
    assert problems[0].prompt.startswith("What is $1+1$?\n") and "\\boxed{}" in problems[0].prompt
    assert (problems[1].answer, problems[1].subject, problems[1].level) == ("\\frac{1}{2}", "Prealgebra", 2)
    assert len(load_problems(BENCHMARKS.get("math500"), str(f), limit=1)) == 1


def test_a_folder_is_searched_for_the_benchmark_file_and_missing_data_names_the_fix(tmp_path):
    _write(tmp_path / "aime24.jsonl", [{"id": "2024-I-1", "problem": "p", "answer": "204"}])
    assert load_problems(BENCHMARKS.get("aime24"), str(tmp_path))[0].answer == "204"
    with pytest.raises(UserError, match="aime25.jsonl"):
        load_problems(BENCHMARKS.get("aime25"), str(tmp_path))


def test_records_without_answers_are_refused(tmp_path):
    f = _write(tmp_path / "bad.jsonl", [{"id": "x", "problem": "p", "answer": None}])
    with pytest.raises(UserError, match="no answer"):
        load_problems(BENCHMARKS.get("math500"), str(f))


def test_hub_field_names_are_mapped():
    gsm = _record_to_problem(BENCHMARKS.get("gsm8k"), {"question": "Q?", "answer": "work <<2*3=6>>\n#### 1,080"}, 7, mapped=True)
    assert (gsm.id, gsm.answer) == ("7", "1080") and gsm.prompt.startswith("Q?")
    math = _record_to_problem(BENCHMARKS.get("math500"), {"unique_id": "test/x/1.json", "problem": "p", "answer": "3", "level": 4}, 0, mapped=True)
    assert (math.id, math.level) == ("test/x/1.json", 4)


# ---------------------------------------------------------------- the literature's suite and its group

SHARED = SHARED_DATA
NEW = {"amc23": 40, "minerva_math": 272, "olympiadbench": 675, "hmmt_feb25": 30, "brumo25": 30, "aime26": 30}


@pytest.mark.skipif(not SHARED.is_dir(), reason="the real data is not beside the checkout")
@pytest.mark.parametrize("name, size", NEW.items())
def test_each_new_benchmark_loads_every_record_under_the_competition_protocol(name, size):
    bench = BENCHMARKS.get(name)
    problems = load_problems(bench, str(SHARED))
    assert len(problems) == size and len({p.id for p in problems}) == size and all(p.answer for p in problems)
    assert problems[0].prompt.endswith("put your final answer within \\boxed{}.")
    assert (bench.samples, bench.temperature, bench.top_p, bench.top_k) == (16, 0.7, 0.8, 20)
    assert bench.max_new_tokens == (4096 if name == "minerva_math" else 8192)
    if name == "olympiadbench":  # its 265 `$...$` golds are LaTeX fragments, not text with dollars
        assert not any("$" in p.answer for p in problems)


def test_a_group_expands_to_its_members_once_in_order_in_eval_and_in_config():
    from s2d_bench.config import BenchmarkConfig
    from s2d_bench.harness.targets import entries
    from s2d_bench.tasks.benchmarks import GROUPS

    members = list(GROUPS["math-rl"])
    assert [e.name for e in entries([BenchmarkConfig(n) for n in ("gsm8k", "math-rl", "math500")])] == ["gsm8k", *members]
    got = entries([BenchmarkConfig("aime24", samples=4), BenchmarkConfig("math-rl", limit=2)])
    assert [e.name for e in got] == ["aime24", *[m for m in members if m != "aime24"]]
    assert got[0].samples == 4 and got[0].limit is None and all(e.limit == 2 and e.samples is None for e in got[1:])


@pytest.mark.skipif(not SHARED.is_dir(), reason="the real data is not beside the checkout")
def test_eval_of_the_math_rl_group_lands_every_set_in_the_store_with_a_pooled_column(tmp_path):
    from click.testing import CliRunner

    from s2d_bench.cli import main
    from s2d_bench.models.builders import save, tiny_qwen3_student
    from s2d_bench.tasks.benchmarks import GROUPS

    model, tok = tiny_qwen3_student()
    save(model, tok, tmp_path / "model")
    out = CliRunner().invoke(main, ["eval", "--model", str(tmp_path / "model"), "--tasks", "math-rl", "--data", str(SHARED),
                                    "--limit", "2", "--samples", "2", "--max-new-tokens", "4", "--out", str(tmp_path / "ev")])
    assert out.exit_code == 0, out.output
    assert sorted(p.parent.name for p in (tmp_path / "ev").glob("*/*/results.json")) == sorted(GROUPS["math-rl"])
    board = CliRunner().invoke(main, ["leaderboard", "--suite", "eval", "--format", "csv"])
    header, row = board.output.splitlines()[:2]
    assert "math-rl (mean of 9) [95% CI]" in header and len(header.split(",")) == 1 + 9 + 1, header
