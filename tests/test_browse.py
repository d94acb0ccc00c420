"""`s2d-bench browse`: the page's content, parsed, and untrusted model text shown as text."""

import json
from html.parser import HTMLParser

import pytest

EVIL = '<script>alert("x")</script></td></tr></table><img src=x onerror=alert(1)>'


class Page(HTMLParser):
    """What a browser would build that matters here: the script elements, sample rows, problems, text."""

    def __init__(self):
        super().__init__()
        self.scripts, self.imgs, self.rows, self.problems, self.text = [], 0, [], [], []
        self._stack, self._in_script = [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self._in_script = True
            self.scripts.append("")
        if tag == "img":
            self.imgs += 1
        if tag == "tr" and "data-classes" in attrs:
            self.rows.append({"classes": attrs["data-classes"].split(), "cells": []})
        if tag == "td" and self.rows:
            self.rows[-1]["cells"].append("")
        if tag == "section":
            self.problems.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
            return
        self.text.append(data)
        if self.rows and self.rows[-1]["cells"]:
            self.rows[-1]["cells"][-1] += data
        if self.problems:
            self.problems[-1] += data


def _eval_folder(root):
    """An `s2d-bench eval --out` folder by hand: 2 problems x 3 samples covering every filter."""
    bench = root / "math500"
    bench.mkdir(parents=True)
    record = {"model": "m<b>odel", "task": "math500", "benchmark": "math500", "n": 2, "k": 3, "mean": 0.5, "stderr": 0.1,
              "pass_at": {"1": 0.5, "2": 0.7}, "maj": 0.5, "agreement": 5 / 6, "no_answer": 1 / 6, "grader": "math_verify",
              "audit_grader": "hendrycks", "engine": "hf", "eval_config": {"samples": 3, "temperature": 0.7}}
    (bench / "results.json").write_text(json.dumps(record))
    problems = [{"id": "p/1", "prompt": "What is 1+1? " + EVIL, "answer": "2", "subject": "Algebra", "level": 1},
                {"id": "p/2", "prompt": "What is 2+2?", "answer": "4", "subject": "Prealgebra", "level": 2}]
    (bench / "problems.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    samples = [("p/1", 0, "\\boxed{2}", "2", True, True), ("p/1", 1, EVIL, None, False, False), ("p/1", 2, "\\boxed{3}", "3", False, False),
               ("p/2", 0, "\\boxed{4}", "4", True, True), ("p/2", 1, "\\boxed{4.0}", "4.0", True, False), ("p/2", 2, "so 5", "5", False, False)]
    (bench / "completions.jsonl").write_text("".join(json.dumps(
        {"id": i, "sample": j, "text": t, "tokens": 7, "extracted": e, "correct": c, "grader": "math_verify", "audit": a,
         "audit_grader": "hendrycks", "timed_out": False}) + "\n" for i, j, t, e, c, a in samples))
    return root


def _parse(path):
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_a_page_shows_the_score_every_problem_and_sample_and_the_filters(tmp_path):
    from click.testing import CliRunner

    from s2d_bench.cli import main

    folder = _eval_folder(tmp_path / "eval")
    out = CliRunner().invoke(main, ["browse", str(folder)])
    assert out.exit_code == 0, out.output
    page = _parse(folder / "browse" / "math500.html")
    text = " ".join(page.text)
    assert "avg@3 0.500" in " ".join(text.split()) and "95% CI [0.304, 0.696]" in text  # 0.5 +- 1.96 x 0.1
    assert len(page.problems) == 2 and "gold answer: 2" in " ".join(page.problems[0].split())
    assert [r["classes"] for r in page.rows] == [["right"], ["wrong", "none"], ["wrong"], ["right"], ["right", "disagree"], ["wrong"]]
    assert [r["cells"][1].strip() for r in page.rows] == ["2", "no answer", "3", "4", "4.0", "5"]
    assert [r["cells"][2].strip() for r in page.rows] == ["right", "wrong", "wrong", "right", "right", "wrong"]
    assert [r["cells"][3].strip() for r in page.rows] == ["right", "wrong", "wrong", "right", "wrong", "wrong"]
    for label, count in (("all", 6), ("wrong", 3), ("right", 3), ("no answer", 1), ("graders disagree", 1)):
        assert f"{label} ({count})" in text
    index = _parse(folder / "browse" / "index.html")
    assert "m<b>odel · math500" in " ".join(index.text)


def test_model_output_holding_markup_is_shown_as_text_and_runs_nothing(tmp_path):
    from s2d_bench.browse import write_pages

    folder = _eval_folder(tmp_path / "eval")
    write_pages(folder)
    page = _parse(folder / "browse" / "math500.html")
    assert len(page.scripts) == 1 and "alert" not in page.scripts[0]  # only the page's own filter script
    assert page.imgs == 0  # no element from the completion or the prompt
    assert page.rows[1]["cells"][5].strip() == EVIL  # the completion, character for character, as text in its cell
    assert len(page.rows) == 6 and all(len(r["cells"]) == 6 for r in page.rows)  # `</td></tr></table>` closed nothing
    assert "m<b>odel" in " ".join(page.text)


def test_a_run_directory_gets_a_page_per_node_and_benchmark(tiny_overrides, tmp_path):
    from s2d_bench.browse import find_evaluations, write_pages
    from s2d_bench.config import load_config
    from s2d_bench.pipeline import Runner

    arms = "arms={bridge: {stages: [teacher_rl]}, longer: {stages: [teacher_rl, warmup]}}"
    runner = Runner(load_config(None, [*tiny_overrides, arms]))
    records = runner.run() + [r for r in Runner(load_config(None, [*tiny_overrides, arms, "seed=1"])).run() if r["seed"] == 1]
    evaluations = find_evaluations(runner.dir.root)
    assert sorted(ev.record["node"] for ev in evaluations) == sorted({r["node"] for r in records})
    columns = {(ev.stage, ev.arms, ev.seeds) for ev in evaluations}  # two warmup nodes told apart; the base teacher is no arm's
    assert columns == {("base", "-", "-"), ("base", "bridge, longer", "0, 1"), ("teacher_rl", "bridge, longer", "0"), ("teacher_rl", "bridge, longer", "1"),
                       ("warmup", "longer", "0"), ("warmup", "longer", "1")}, columns
    for ev in evaluations:
        assert ev.problems_stored and len(ev.problems) == ev.record["n"]
        assert all(len(p["samples"]) == ev.record["k"] and p.get("answer") for p in ev.problems)
        assert sum(p["mean"] for p in ev.problems) / len(ev.problems) == pytest.approx(ev.record["mean"])
    paths = write_pages(runner.dir.root)
    assert len(paths) == len(evaluations) + 1 and all(p.stat().st_size > 0 for p in paths)
    index = Page()
    index.feed(paths[0].read_text())
    assert "warmup longer 1" in " ".join(" ".join(index.text).split())


def test_a_folder_without_evaluations_is_a_clear_error(tmp_path):
    from s2d_bench.browse import find_evaluations
    from s2d_bench.errors import UserError

    with pytest.raises(UserError, match="no evaluations"):
        find_evaluations(tmp_path)
    with pytest.raises(UserError, match="is not a folder"):
        find_evaluations(tmp_path / "missing")


NEW = ("amc23", "minerva_math", "olympiadbench", "hmmt_feb25", "brumo25", "aime26")


@pytest.mark.parametrize("name", NEW)
def test_every_new_benchmark_pages_its_real_answers_with_units_lists_and_intervals(name, tmp_path):
    """Real golds (units, lists, intervals, LaTeX) and answers boxed whole or item by item: every gold and every
    extracted answer on the page character for character, as text, under its benchmark's protocol."""
    from conftest import SHARED_DATA

    from s2d_bench.browse import write_pages
    from s2d_bench.tasks import BENCHMARKS
    from s2d_bench.tasks.base import joined_boxes
    from s2d_bench.tasks.benchmarks import load_problems

    if not (SHARED_DATA / BENCHMARKS.get(name).local_file).is_file():
        pytest.skip(f"real data not at {SHARED_DATA}")
    problems = load_problems(BENCHMARKS.get(name), str(SHARED_DATA))
    odd = [p for p in problems if any(mark in p.answer for mark in (",", "[", "(", "\\mathrm", "\\text", "^", "<", "&"))]
    chosen = (odd + [p for p in problems if p not in odd])[:4]
    bench = tmp_path / "eval" / name
    bench.mkdir(parents=True)
    record = {"model": "tiny", "task": name, "benchmark": name, "n": len(chosen), "k": 2, "mean": 0.5, "stderr": 0.1, "grader": "math_verify",
              "eval_config": {"samples": 2, "extraction": BENCHMARKS.get(name).extraction}}
    (bench / "results.json").write_text(json.dumps(record))
    (bench / "problems.jsonl").write_text("".join(json.dumps({"id": p.id, "prompt": p.prompt, "answer": p.answer}) + "\n" for p in chosen))
    rows = []
    for p in chosen:
        for j, text in enumerate((f"so the answer is $\\boxed{{{p.answer}}}$", ", ".join(f"\\boxed{{{x.strip()}}}" for x in p.answer.split(",")))):
            rows.append({"id": p.id, "sample": j, "text": text, "tokens": 9, "extracted": joined_boxes(text), "correct": j == 0,
                         "grader": "math_verify", "audit": None, "timed_out": False})
    (bench / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_pages(tmp_path / "eval")
    page = _parse(tmp_path / "eval" / "browse" / f"{name}.html")
    assert len(page.problems) == len(chosen) and len(page.rows) == 2 * len(chosen) and page.imgs == 0
    for p, problem in zip(chosen, page.problems):
        assert f"gold answer: {p.answer}" in problem
    assert [r["cells"][1].strip() for r in page.rows] == [r["extracted"] for r in rows]
    assert f"extraction {BENCHMARKS.get(name).extraction}" in " ".join(" ".join(page.text).split())
