import json
import os
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from s2d_bench.harness.grading import GradingPool, grade
from s2d_bench.harness.hendrycks import is_equiv

GOLDEN = [json.loads(line) for line in (Path(__file__).parent / "data" / "grading_golden.jsonl").read_text().splitlines()]
DATA = SHARED_DATA
needs_data = pytest.mark.skipif(not (DATA / "math500.jsonl").is_file(), reason=f"real data not at {DATA} (set S2D_DATA_DIR)")


@pytest.fixture(scope="module")
def pool():
    with GradingPool(workers=2, timeout=5.0) as p:
        yield p


@pytest.fixture(scope="module")
def golden_verdicts(pool):
    return grade([r["completion"] for r in GOLDEN], [r["gold"] for r in GOLDEN], pool=pool)


@pytest.mark.parametrize("index", range(len(GOLDEN)), ids=[r["case"] for r in GOLDEN])
def test_golden_grading(index, golden_verdicts):
    row = GOLDEN[index]
    assert golden_verdicts[index].correct is row["expected"], row


def test_golden_file_covers_the_required_kinds():
    cases = " ".join(r["case"] for r in GOLDEN)
    for kind in ("fraction", "decimal", "interval", "set", "units", "text", "choice", "degrees", "percent", "matrix", "tower"):
        assert kind in cases
    assert {r["expected"] for r in GOLDEN} == {True, False}


def test_a_hanging_answer_is_killed_counted_and_the_pool_goes_on():
    with GradingPool(workers=1, timeout=2.0) as pool:
        verdicts = grade(["\\boxed{9^{9^{9^{9}}}}", "\\boxed{\\frac{1}{2}}"], ["1", "0.5"], pool=pool)
        assert pool.timeouts == 1
    assert verdicts[0].timed_out and not verdicts[0].correct
    assert verdicts[1].correct and not verdicts[1].timed_out


def test_gold_goes_first_and_identical_items_are_graded_once(pool):
    before = pool.timeouts
    verdicts = grade(["\\boxed{0.5}"] * 50, ["\\frac{1}{2}"] * 50, pool=pool)
    assert all(v.correct for v in verdicts) and pool.timeouts == before
    assert pool.run([("math_verify", "1", "1"), ("math_verify", "1", "1")]) == {("math_verify", "1", "1"): True}


def test_audit_grader_disagrees_where_strings_differ_but_values_match(pool):
    v = grade(["\\boxed{\\frac{2}{4}}", "\\boxed{0.5}"], ["\\frac{1}{2}", "\\frac{1}{2}"], pool=pool)
    assert [x.correct for x in v] == [True, True]
    assert [x.audit for x in v] == [False, True]  # Hendrycks normalises 0.5, not 2/4


def test_hendrycks_normalisation_by_hand():
    assert is_equiv("\\frac{1}{2}", "\\dfrac12")
    assert is_equiv("5", "5 \\text{ cm}")
    assert is_equiv("30", "30^\\circ")
    assert is_equiv("\\frac{3}{4}", "3/4")
    assert not is_equiv("5", None)
    assert not is_equiv("5", "6")


@needs_data
@pytest.mark.parametrize("name", ["math500", "aime24", "aime25", "gsm8k_test", "amc23", "minerva_math", "olympiadbench", "hmmt_feb25",
                                  "brumo25", "aime26"])
def test_every_gold_answer_grades_correct_against_itself(name, pool):
    rows = [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines()]
    golds = [r["answer"] for r in rows]
    verdicts = grade([f"The final answer is $\\boxed{{{g}}}$." for g in golds], golds, pool=pool)
    failing = [(r["id"], r["answer"]) for r, v in zip(rows, verdicts) if not v.correct]
    assert failing == []


@needs_data
def test_verdicts_do_not_depend_on_machine_load():
    """The same ordinary completions (right, respaced, other problems' answers, random integers) graded
    on an idle machine and beside two CPU-bound processes, from a main module that imports torch and
    transformers' model classes (benchmarks/grading_load.py: every spawned worker re-imports it):
    identical verdicts, no timeouts. The deadline is the worker's own CPU time on an item and starts
    after its warm-up, so a starved worker is waited for, not killed. The deadline, 1 s, is 2.5x the slowest of these
    items' own CPU time idle (0.40 s: `\\cot x` against a fraction, math-verify's first parse of that gold): at 0.5 s,
    CPU time inflated by two cores' contention once took that item past it (2 timeouts, loaded suite)."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "grading_load.py"
    out = subprocess.run([sys.executable, str(script), "--data", str(DATA), "--items", "400", "--timeout", "1.0"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout[out.stdout.index("{"):])
    assert result["idle"]["timeouts"] == 0 and result["loaded"]["timeouts"] == 0, result
    assert result["verdicts_differ"] == 0, result
    assert 0.3 < result["idle"]["score"] < 0.8  # right and wrong answers both present


def _variants(gold: str) -> list[str]:
    """Ways an answer gets written (the kinds that split graders): the MATH paper's normalisation must judge each
    as its reference does."""
    return [gold, f"${gold}$", f"\\${gold}", f"{gold}\\%", f"{gold}%", f"{gold} \\text{{ cm}}", f"{gold}\\text{{ cm}}\\text{{ and }}",
            f"x = {gold}", f"x=y={gold}", f" {gold} ", gold.replace("\\frac", "\\dfrac"), gold.replace("{", "").replace("}", ""),
            f"\\left({gold}\\right)", f"{gold}^\\circ", gold + "\\!", f".{gold}", "0.5", "1/2", "a/b", gold.replace("\\sqrt{", "\\sqrt")]


@needs_data
def test_the_audit_grader_is_the_reference_is_equiv_on_every_pair():
    """`hendrycks` agrees with the copy of the MATH grader lm-eval ships, verdict for verdict, on MATH-500's and
    MATH training gold answers against each other's variants (and against a neighbouring problem's answer)."""
    reference = pytest.importorskip("lm_eval.tasks.hendrycks_math.utils")
    from s2d_bench.harness.hendrycks import is_equiv

    golds = [json.loads(line)["answer"] for name in ("math500", "math_train") for line in (DATA / f"{name}.jsonl").read_text().splitlines()]
    golds = golds[:500] + golds[500::20]
    pairs = [(g, v) for i, g in enumerate(golds) for v in _variants(g) + _variants(golds[i - 1])[:3]]
    disagree = [(g, v) for g, v in pairs if is_equiv(g, v) != reference.is_equiv(g, v)]
    assert len(pairs) > 15000 and not disagree, f"{len(disagree)} of {len(pairs)} differ, e.g. {disagree[:5]}"
    assert {is_equiv(g, v) for g, v in pairs} == {True, False}


def test_the_graders_in_process_gold_first_and_no_answer_wrong():
    """The grader functions themselves, as the pool's workers call them: math-verify gold first (gold `1 < x \\le 2`
    against `(1,2]` is right that way round only), surrounding space ignored by `exact`, no answer never right."""
    from math_verify import parse, verify

    from s2d_bench.harness.graders import GRADERS, exact_equal, math_verify_equal

    assert math_verify_equal(r"1 < x \le 2", "(1,2]")
    assert not bool(verify(parse(r"$\boxed{(1,2]}$"), parse(r"$\boxed{1 < x \le 2}$")))  # the other order is wrong
    assert math_verify_equal(r"\frac{1}{2}", "0.5") and not math_verify_equal("2", "3")
    assert not math_verify_equal("1", None) and not exact_equal("1", None)
    assert exact_equal(" 12 ", "12") and not exact_equal("12", "12.0")
    assert GRADERS.get("math_verify") is math_verify_equal and GRADERS.get("exact") is exact_equal


def test_math_verify_runs_outside_the_main_thread():
    """Its own alarm timeouts would refuse a thread (signal.alarm): they are off, the pool's deadline stands instead."""
    import threading

    from s2d_bench.harness.graders import math_verify_equal

    out = {}
    thread = threading.Thread(target=lambda: out.update(v=math_verify_equal(r"\frac{1}{2}", "0.5")))
    thread.start()
    thread.join()
    assert out == {"v": True}


def test_a_completion_without_an_answer_is_wrong_by_both_graders_and_not_a_timeout():
    from s2d_bench.harness.grading import grade

    v = grade(["no box here", "\\boxed{2}"], ["2", "2"], grader="exact", audit="hendrycks")
    assert (v[0].extracted, v[0].correct, v[0].audit, v[0].timed_out) == (None, False, False, False)
    assert (v[1].extracted, v[1].correct, v[1].audit, v[1].timed_out) == ("2", True, True, False)
    alone = grade(["\\boxed{2}"], ["2"], grader="exact", audit=None)[0]
    assert alone.audit is None and alone.correct


def test_an_unknown_grader_is_refused_before_anything_is_graded():
    from s2d_bench.errors import UserError
    from s2d_bench.harness.grading import grade

    with pytest.raises(UserError, match="grader"):
        grade(["no answer"], ["1"], grader="exact", audit="nope")
    with pytest.raises(UserError, match="grader"):
        grade(["no answer"], ["1"], grader="nope", audit=None)


def _children() -> set[int]:
    """This process's child processes, live or not yet reaped (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_grade_closes_the_pool_it_made_and_leaves_a_given_one_running():
    from s2d_bench.harness.grading import GradingPool, grade

    before = _children()
    assert grade(["\\boxed{x^2}"], ["x \\cdot x"], audit=None)[0].correct  # graded by a worker: not equal as written
    assert _children() <= before  # its own workers are gone, reaped
    with GradingPool(workers=1) as pool:
        assert grade(["\\boxed{x^2}"], ["x \\cdot x"], audit=None, pool=pool)[0].correct
        assert pool._slots and all(slot.alive() for slot in pool._slots)  # the caller's pool is still up
        assert {slot.proc.pid for slot in pool._slots} <= _children() - before
    assert _children() <= before


def test_the_workers_never_rerun_the_callers_main_script(tmp_path):
    """A worker imports the graders, not the script that made the pool: multiprocessing's spawn re-ran a main script's
    top level in every worker (a script importing torch at the top paid its start-up once a worker)."""
    import subprocess
    import sys

    runs = tmp_path / "runs"
    script = tmp_path / "main.py"
    script.write_text(
        f"with open({str(runs)!r}, 'a') as f:\n"
        "    f.write('ran\\n')\n"
        "if __name__ == '__main__':\n"
        "    from s2d_bench.harness.grading import GradingPool, grade\n"
        "    with GradingPool(workers=2) as pool:\n"
        "        print(sum(v.correct for v in grade(['\\\\boxed{x^2}', '\\\\boxed{3}'], ['x \\\\cdot x', '4'], pool=pool)))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"  # both items graded (by two workers), one right
    assert runs.read_text() == "ran\n"  # the script's top level ran once: in the parent

# ---------------------------------------------------------------- a dead grading worker costs one item, never the run
# Worker targets defined here (module level, so a worker imports them by name): the real worker, except on one answer.

def _dies_on_marked_answers(conn):
    """The real worker, but an answer 'SIGKILL' kills the process mid-item and 'EXIT' leaves through os._exit."""
    import signal

    from s2d_bench.harness import grading_pool

    real_recv = conn.recv

    def recv():
        item = real_recv()
        if item is not None and item[3] == "SIGKILL":
            os.kill(os.getpid(), signal.SIGKILL)
        if item is not None and item[3] == "EXIT":
            os._exit(3)
        return item

    conn.recv = recv
    grading_pool._worker(conn)


def _fails_to_start_once(conn):
    """Crashes before it is ready the first time (a marker file says it did), then works."""
    from s2d_bench.harness import grading_pool

    marker = Path(os.environ["S2D_TEST_START_MARKER"])
    if not marker.exists():
        marker.write_text("crashed once")
        os._exit(1)
    grading_pool._worker(conn)


GOOD_ITEMS = [("math_verify", "\\frac{1}{2}", "0.5"), ("math_verify", "3", "4"), ("math_verify", "x^2", "x\\cdot x")]


@pytest.mark.parametrize("answer", ["SIGKILL", "EXIT"])
def test_a_worker_that_dies_mid_item_costs_that_item_only(answer, monkeypatch):
    from s2d_bench.harness import grading_pool

    with GradingPool(workers=2, timeout=10.0) as clean:
        expected = clean.run(GOOD_ITEMS)
    monkeypatch.setattr(grading_pool, "_worker", _dies_on_marked_answers)
    with GradingPool(workers=2, timeout=10.0) as pool:
        results = pool.run([GOOD_ITEMS[0], ("math_verify", "1", answer), *GOOD_ITEMS[1:]])
        assert pool.timeouts == 1  # retried once on a fresh worker, then a grading failure, counted
        again = pool.run(GOOD_ITEMS)  # the pool goes on with replaced workers
    assert results.pop(("math_verify", "1", answer)) is None
    assert results == expected == again and expected == dict(zip(GOOD_ITEMS, [True, False, True]))


def test_a_worker_that_crashes_while_starting_is_replaced(monkeypatch, tmp_path):
    from s2d_bench.harness import grading_pool

    monkeypatch.setenv("S2D_TEST_START_MARKER", str(tmp_path / "marker"))
    monkeypatch.setattr(grading_pool, "_worker", _fails_to_start_once)
    with GradingPool(workers=1, timeout=10.0) as pool:
        assert pool.run(GOOD_ITEMS) == dict(zip(GOOD_ITEMS, [True, False, True])) and pool.timeouts == 0
    assert (tmp_path / "marker").read_text() == "crashed once"


@needs_data
def test_olympiadbench_golds_without_their_dollars_still_grade_against_themselves(pool):
    """The loader drops OlympiadBench's `$...$` (`$69$,$84$` -> `69,84`): what the grader compares must still be right."""
    from s2d_bench.tasks import BENCHMARKS
    from s2d_bench.tasks.benchmarks import load_problems

    problems = load_problems(BENCHMARKS.get("olympiadbench"), str(DATA))
    verdicts = grade([f"The final answer is $\\boxed{{{p.answer}}}$." for p in problems], [p.answer for p in problems], pool=pool)
    assert [(p.id, p.answer) for p, v in zip(problems, verdicts) if not v.correct] == []


EXTRACTION = [json.loads(line) for line in (Path(__file__).parent / "data" / "extraction_golden.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extraction", ["last_box", "boxes"])
def test_each_extraction_reads_the_answers_its_golden_cases_say(extraction, pool):
    """A list boxed item by item is right only when the boxes of one answer are joined (math-verify's own extraction);
    a box earlier in the reasoning is never joined to the answer; an unclosed last box is no answer either way."""
    verdicts = grade([r["completion"] for r in EXTRACTION], [r["gold"] for r in EXTRACTION], pool=pool, extraction=extraction)
    assert [v.correct for v in verdicts] == [r[extraction] for r in EXTRACTION], [r["case"] for r in EXTRACTION]
    assert {r["last_box"] for r in EXTRACTION} == {r["boxes"] for r in EXTRACTION} == {True, False}
    assert any(r["last_box"] != r["boxes"] for r in EXTRACTION)


RULES = [json.loads(line) for line in (Path(__file__).parent / "data" / "answer_rules_golden.jsonl").read_text().splitlines()]


def test_each_benchmarks_answer_rules_give_the_verdicts_of_its_golden_cases(pool):
    """Minerva's e-notation golds against `\\times 10^{n}`, OlympiadBench's units and tolerances, and math-verify's two
    false positives found against the reference graders (benchmarks/reference_graders.py), as data."""
    from s2d_bench.tasks.answer_rules import AnswerRules

    rules = [AnswerRules(tuple(r.get("rewrites", ())), r.get("unit"), r.get("tolerance")) for r in RULES]
    verdicts = grade([f"So \\boxed{{{r['answer']}}}{r.get('after', '')}" for r in RULES], [r["gold"] for r in RULES], pool=pool,
                     rules=rules)
    wrong = [r["case"] for r, v in zip(RULES, verdicts) if v.correct is not r["expected"]]
    assert wrong == []
    assert {r["expected"] for r in RULES} == {True, False}


def test_the_benchmarks_records_carry_their_rules():
    from s2d_bench.tasks.benchmarks import MINERVA, OLYMPIADBENCH, load_problems

    minerva = load_problems(MINERVA, str(SHARED_DATA), limit=2)
    assert {p.rules.rewrites for p in minerva} == {("trailing_unit", "e_notation")}
    olympiad = {p.id: p.rules for p in load_problems(OLYMPIADBENCH, str(SHARED_DATA))}
    assert (olympiad["olympiadbench-2592"].unit, olympiad["olympiadbench-2592"].tolerance) == ("%", 0.1)
    assert sum(r.unit is not None for r in olympiad.values()) == 8 and sum(r.tolerance is not None for r in olympiad.values()) == 1


def test_a_number_past_a_floats_range_is_left_to_the_grader_never_a_crash(pool):
    """A sampled `\\boxed{5e999}` once ended a whole run (an RL reward) with an OverflowError in the answer rules: numbers
    past a float's range, or with exponents of thousands of digits, are no number to them, and the grader decides."""
    from s2d_bench.tasks.answer_rules import AnswerRules, number

    assert number("4.5e33") == 4.5e33 and number("3\\times10^{5}") == 3e5 and number("1e308") == 1e308
    assert [number(t) for t in ("5e999", "2e308", "3\\times10^{400}", "9" * 400, "1e" + "9" * 5000)] == [None] * 5
    rules = AnswerRules(("e_notation",))
    assert rules.decide("5", "5e999") is None and rules.decide("5e999", "5e999") is None
    verdicts = grade(["So \\boxed{5e999}.", "So \\boxed{5}."], ["5", "5"], pool=pool, rules=[rules, rules])
    assert [v.correct for v in verdicts] == [False, True]


class InProcess:
    """The pool's contract with its items graded here, by the grader functions the pool's workers call (mutation testing
    sees only what runs in this process)."""

    def run(self, items):
        from s2d_bench.harness.graders import GRADERS

        return {item: GRADERS.get(item[0])(item[1], item[2]) for item in items}


def test_the_golden_verdicts_are_the_grader_functions_own_in_this_process():
    """Every golden case, and every answer-rules case, graded in this process gives the verdict the pool gives: math-verify
    with the gold as written first (`x \\in [-2,7]`) and the case-folded tautology (`N=n`) refused."""
    from s2d_bench.tasks.answer_rules import AnswerRules

    cases = [r for r in GOLDEN if "must time out" not in r["case"]]  # here no deadline would stop it
    verdicts = grade([r["completion"] for r in cases], [r["gold"] for r in cases], pool=InProcess())
    assert len(verdicts) == len(cases) == len(GOLDEN) - 1 and [r["case"] for r, v in zip(cases, verdicts) if v.correct is not r["expected"]] == []
    rules = [AnswerRules(tuple(r.get("rewrites", ())), r.get("unit"), r.get("tolerance")) for r in RULES]
    verdicts = grade([f"So \\boxed{{{r['answer']}}}{r.get('after', '')}" for r in RULES], [r["gold"] for r in RULES],
                     pool=InProcess(), rules=rules)
    assert len(verdicts) == len(RULES) and [r["case"] for r, v in zip(RULES, verdicts) if v.correct is not r["expected"]] == []


def test_a_verdict_the_answer_rules_settle_keeps_the_answer_is_the_audits_too_and_asks_no_grader(agreeing_pool):
    """Inside a tolerance, or two numbers under e-notation, the rules decide: the verdict keeps the answer read, the audit
    says the same (none without an audit grader), and no grader is asked, nor for a completion without an answer (wrong,
    whatever its rules' rewrites)."""
    from s2d_bench.tasks.answer_rules import AnswerRules

    tolerant, minerva = AnswerRules((), None, 0.1), AnswerRules(("e_notation",), None, None)
    completions = ["\\boxed{50.05}", "\\boxed{51}", "\\boxed{2.88 \\times 10^{-19}}", "\\boxed{4.32e-19}", "no box", "no box", "\\boxed{7}"]
    golds = ["50", "50", "2.88e-19", "2.88e-19", "50", "2.88e-19", "7"]
    rules = [tolerant, tolerant, minerva, minerva, tolerant, minerva, AnswerRules()]
    verdicts = grade(completions, golds, pool=agreeing_pool, rules=rules)
    assert [(v.extracted, v.correct, v.audit) for v in verdicts] == [
        ("50.05", True, True), ("51", True, False),  # outside the tolerance the graders decide (this pool: right; Hendrycks: no)
        ("2.88 \\times 10^{-19}", True, True), ("4.32e-19", False, False), (None, False, False), (None, False, False), ("7", True, True)]
    assert sorted({e for _, _, e in agreeing_pool.asked}) == ["51", "7"]  # decided, or no answer: never asked
    assert [(v.correct, v.audit) for v in grade(completions[:4], golds[:4], audit=None, pool=agreeing_pool, rules=rules[:4])] == [
        (True, None), (True, None), (True, None), (False, None)]
