"""`s2d-bench browse`: one static HTML page per evaluation, to read the samples behind a score.

Every evaluation keeps its record (`results.json` / `eval-<hash>.json`), every completion with its
extracted answer and both graders' verdicts (`completions*.jsonl`) and its prompts and gold answers
(`problems*.jsonl`); this module only lays them out. A page shows the avg@k with its interval on
top, then each problem with its gold answer and its k samples, and filters (wrong, right, no
answer, grader disagreement) that run in the page: no server, open the file. Model outputs are
untrusted text: the template escapes every value (jinja2 autoescape), the page's one script is
ours, and data reach it only through `data-` attributes, never inside the script.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from s2d_bench.errors import UserError
from s2d_bench.harness.records import eval_records, problems_path
from s2d_bench.writable import check_folder

Z95 = 1.959964  # the normal 97.5% quantile: mean +- Z95 * stderr over problems
FILTERS = {"all": "all", "wrong": "wrong", "right": "right", "none": "no answer", "disagree": "graders disagree"}


@dataclass
class Evaluation:
    """One evaluation as the page shows it."""

    title: str
    slug: str  # the page's file name, without .html
    record: dict[str, Any]
    problems: list[dict[str, Any]] = field(default_factory=list)  # each with its "samples"
    problems_stored: bool = True  # False: evaluated before prompts and answers were kept beside the completions
    stage: str = "-"  # the index's columns, so two nodes of one stage (arms, seeds) can be told apart
    arms: str = "-"
    seeds: str = "-"


def _arm_uses(folder: Path) -> dict[str, tuple[set[str], set[int]]]:
    """node -> (the arms it is a stage of, the seeds it was run under), from a run directory's arms/*.json."""
    uses: dict[str, tuple[set[str], set[int]]] = {}
    for path in sorted(folder.glob("arms/*.json")):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            rows = info["arms"].items()
        except (OSError, ValueError, KeyError, AttributeError):
            continue  # a damaged arms file costs the index a column, not the pages
        for arm, nodes in rows:
            for node, _ in nodes:
                arms, seeds = uses.setdefault(node, (set(), set()))
                arms.add(arm)
                if isinstance(info.get("seed"), int):
                    seeds.add(info["seed"])
    return uses


def sample_classes(sample: dict[str, Any]) -> list[str]:
    """The filters a sample answers to: right or wrong, no answer, graders disagree."""
    classes = ["right" if sample.get("correct") else "wrong"]
    if sample.get("extracted") is None:
        classes.append("none")
    if sample.get("audit") is not None and bool(sample["audit"]) != bool(sample.get("correct")):
        classes.append("disagree")
    return classes


def _jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); re-run the evaluation to rewrite it") from None


def _record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable record ({exc})") from None


def load_evaluation(record_path: Path, record: dict[str, Any], completions: Path, title: str, slug: str) -> Evaluation:
    """An evaluation from its record (read from `record_path`), completions and (when kept) problems files."""
    if not completions.is_file():
        raise UserError(f"{record_path}: no completions file beside it ({completions.name}); the samples were not kept")
    by_id: dict[str, list[dict[str, Any]]] = {}
    for row in _jsonl(completions):
        row["classes"] = sample_classes(row)
        by_id.setdefault(str(row["id"]), []).append(row)
    stored = problems_path(completions).is_file()
    problems = _jsonl(problems_path(completions)) if stored else [{"id": pid} for pid in by_id]
    for problem in problems:
        samples = sorted(by_id.get(str(problem["id"]), []), key=lambda s: s.get("sample", 0))
        problem["samples"] = samples
        problem["mean"] = sum(bool(s.get("correct")) for s in samples) / len(samples) if samples else 0.0
    return Evaluation(title, slug, record, problems, stored)


def find_evaluations(folder: Path) -> list[Evaluation]:
    """Every evaluation under a run directory (nodes/<id>/eval-<hash>.json) or an `s2d-bench eval` folder
    (<benchmark>/results.json, or one benchmark's folder itself)."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder: give a run directory (runs/<name>) or an eval --out folder")
    found = []
    for record in sorted(folder.glob("nodes/*/eval-*.json")):
        digest = record.stem.removeprefix("eval-")
        node = record.parent.name
        info = _record(record)
        title = f"{info.get('stage', '?')} {info.get('role', '')} · {info.get('task', '?')} · node {node}"
        found.append(load_evaluation(record, info, record.with_name(f"completions-{digest}.jsonl"), title, f"{node}-{info.get('task', digest)}"))
    for record in [*eval_records(folder), *folder.glob("results.json")]:
        info = _record(record)
        found.append(load_evaluation(record, info, record.with_name("completions.jsonl"), f"{info.get('model', '?')} · {info.get('task', '?')}",
                                     "-".join(record.parent.relative_to(folder).parts) or str(info.get("task"))))
    uses = _arm_uses(folder)
    for ev in found:
        ev.stage = str(ev.record.get("stage") or "-")
        arms, seeds = uses.get(str(ev.record.get("node")), (set(), set()))
        ev.arms = ", ".join(sorted(arms)) or "-"
        ev.seeds = ", ".join(map(str, sorted(seeds))) or "-"
    if not found:
        raise UserError(f"{folder}: no evaluations (looked for nodes/*/eval-*.json and */*/results.json)")
    return found


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:120]


def _environment() -> jinja2.Environment:
    templates = resources.files("s2d_bench") / "templates"
    return jinja2.Environment(loader=jinja2.FunctionLoader(lambda name: (templates / name).read_text(encoding="utf-8")),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def render_page(ev: Evaluation) -> str:
    r = ev.record
    mean, stderr = float(r["mean"]), float(r.get("stderr") or 0.0)
    counts = {key: sum(key == "all" or key in s["classes"] for p in ev.problems for s in p["samples"]) for key in FILTERS}
    return _environment().get_template("browse.html").render(
        ev=ev, r=r, mean=mean, low=max(0.0, mean - Z95 * stderr), high=min(1.0, mean + Z95 * stderr), filters=FILTERS, counts=counts)


def render_index(pages: list[tuple[Evaluation, str]], folder: Path) -> str:
    return _environment().get_template("browse_index.html").render(pages=pages, folder=str(folder))


def write_pages(folder: Path, out: Path | None = None) -> list[Path]:
    """The pages of every evaluation under `folder`, and index.html linking them, into `out` (default folder/browse)."""
    out = out or folder / "browse"
    check_folder(out, "--out")  # before reading every completion
    evaluations = find_evaluations(folder)
    out.mkdir(parents=True, exist_ok=True)
    written, pages = [], []
    for ev in evaluations:
        path = out / f"{_slug(ev.slug)}.html"
        path.write_text(render_page(ev), encoding="utf-8")
        written.append(path)
        pages.append((ev, path.name))
    index = out / "index.html"
    index.write_text(render_index(pages, folder), encoding="utf-8")
    return [index, *written]
