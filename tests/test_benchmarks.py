import json

import pytest

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
