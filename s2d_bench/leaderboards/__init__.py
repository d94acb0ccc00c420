"""Leaderboards: tables and a plot rendered from the results store, nothing else.

`build(store, suite)` gathers a suite's records into a `Leaderboard` (pure: the same store gives
the same tables); `render(board, fmt)` writes it as Markdown, CSV, HTML or LaTeX; `publish`
writes every format and the stage plot into a folder (default `leaderboards/`).
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from s2d_bench.errors import UserError
from s2d_bench.leaderboards.detail import c1_table, c2_table
from s2d_bench.leaderboards.tables import (REFERENCE_BACKEND, ablation_frame, agreement_table, arm_table, model_table, ordering_table,
                                           trajectory)
from s2d_bench.store import Store

FORMATS = ("md", "csv", "html", "latex")
SUFFIX = {"md": "md", "csv": "csv", "html": "html", "latex": "tex"}


@dataclass
class Leaderboard:
    suite: str
    main: pd.DataFrame
    trajectories: dict[str, pd.DataFrame]  # task -> arm x stage means (workflow suites only)
    c1: pd.DataFrame
    c2: pd.DataFrame
    ordering: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # the paper's teacher-quality ordering
    scope: str = ""  # what the seeds pooled in its intervals varied (workflow suites)
    agreement: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # arms run on several backends
    ablations: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)  # task -> the ablation figure's numbers

    def sections(self) -> list[tuple[str, pd.DataFrame]]:
        return [(title, frame) for title, frame in [
            (f"{self.suite}" + (f" ({self.scope})" if self.scope else ""), self.main),
            ("Teacher-quality ordering: raw-teacher transfer < direct GRPO < RL-teacher transfer (deltas paired by seed and "
             "problem, 95% intervals over both; unresolved ones say how many seeds would resolve them)", self.ordering),
            ("Backend agreement: each backend's arm minus the torch backend's, paired over seeds and problems (every config "
             "of the suite; 95% intervals over both)", self.agreement),
            ("C1: teacher reward gain from stage 1", self.c1),
            ("C2: teacher-student KL around each distillation stage (held-out prompts)", self.c2),
        ] if not frame.empty]


SCOPES = {"stages": "seeds vary every stage; the base models are the same for all",
          "all": "seeds vary the whole chain, base-model pretraining included"}


def seed_caption(scopes: set[str], most_seeds: int = 2) -> str:
    """What the intervals cover, for the caption: with one seed problems only; else seeds and problems, and what
    the seeds varied (two scopes in one table are said to be mixed)."""
    if most_seeds < 2:
        return "one seed: 95% intervals cover problem sampling only, not training-seed noise"
    varied = (SCOPES.get(next(iter(scopes)), "") if len(scopes) == 1
              else "seeds of mixed scope: " + "; ".join(SCOPES.get(s, s) for s in sorted(scopes)))
    return f"95% intervals over seeds and problems; {varied}"


def build(store: Store, suite: str, every_config: bool = False) -> Leaderboard:
    """The suite's tables. A workflow suite shows the arms of the config run last (a changed config
    replaces the old one's rows), or with `every_config` each config's arms, labelled by its hash; when each
    config ran on its own backend (a grid and its backend swap), labelled by the backend instead, with a
    `backend` column and the teacher-quality ordering of each backend's grid."""
    evals = store.evals(suite)
    if not evals:
        known = ", ".join(store.suites()) or "none yet"
        raise UserError(f"no records for suite '{suite}' in {store.path} (suites: {known})")
    arms = store.arms(suite, every_config)
    if not arms:  # an `s2d-bench eval` suite: models x benchmarks
        return Leaderboard(suite, model_table(evals), {}, pd.DataFrame(), pd.DataFrame())
    backends = config_backends(evals, arms)
    by_backend = len(set(backends.values())) == len(backends) > 1  # each config its own backend: the grids of a swap
    if by_backend:  # the ordering within each backend's grid, a backend column on every table row
        ordering = pd.concat([ordering_table(evals, [r for r in arms if r["config"] == c]).assign(backend=b)
                              for c, b in sorted(backends.items(), key=lambda cb: cb[1] != REFERENCE_BACKEND)], ignore_index=True)
    else:
        ordering = ordering_table(evals, arms)
    if len(backends) > 1:
        arms = [{**r, "arm": f"{r['arm']} [{backends[r['config']] if by_backend else r['config'][:6] or 'old'}]"} for r in arms]
    shown = {r["node"] for r in arms}
    diagnostics = [d for d in store.diagnostics(suite) if d["node"] in shown]  # never a superseded config's nodes
    tasks = sorted({r["task"] for r in evals})
    main = arm_table(evals, arms)
    if by_backend:
        label = {r["arm"]: backends[r["config"]] for r in arms}
        main.insert(1, "backend", main["arm"].map(label))
    return Leaderboard(suite, main, {t: trajectory(evals, arms, t) for t in tasks},
                       c1_table(evals, diagnostics), c2_table(arms, diagnostics), ordering,
                       seed_caption({r.get("seed_scope") or "stages" for r in evals if r["node"] in shown},
                                    _most_seeds(main)),
                       agreement_table(evals, store.arms(suite, every_config=True)),
                       {t: ablation_frame(evals, arms, t) for t in tasks})


def _most_seeds(main: pd.DataFrame) -> int:
    """The most seeds any arm pooled; an arm with no records yet (a grid still running) shows '-' and counts none."""
    seeds = pd.to_numeric(main["seeds"], errors="coerce").max() if "seeds" in main else None
    return int(seeds) if seeds is not None and seeds == seeds else 1


def config_backends(evals: list[dict], arms: list[dict]) -> dict[str, str]:
    """config -> the backend its stage nodes ran on ('?' for records from before the backend was stored)."""
    backend_of = {r["node"]: r.get("backend") for r in evals}
    out: dict[str, set] = {}
    for r in arms:
        if r["stage"] != "base":
            out.setdefault(r["config"], set()).add(backend_of.get(r["node"]) or "?")
    return {config: ",".join(sorted(b)) for config, b in out.items()}


def _escape_pipes(value: object) -> object:
    return value.replace("|", r"\|") if isinstance(value, str) else value


def _frame(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "md":  # a bare '|' in a name or cell (the C2 header `KL(T||S)`) would split its row: escaped
        return frame.rename(columns=_escape_pipes).map(_escape_pipes).to_markdown(index=False)
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "html":
        return frame.to_html(index=False, border=0, escape=True)
    return frame.to_latex(index=False).replace("→", r"$\rightarrow$").replace("Δ", r"$\Delta$")


def render(board: Leaderboard, fmt: str = "md", detail: bool = True, figures: tuple[str, ...] = ()) -> str:
    """The board as text in `fmt`; HTML is a standalone page (`figures`: image files beside it, shown under the tables)."""
    if fmt not in FORMATS:
        raise UserError(f"format '{fmt}': use one of {', '.join(FORMATS)}")
    sections = board.sections() if detail else board.sections()[:1]
    if fmt == "csv":  # one table per file is what CSV readers expect: the main table
        return _frame(board.main, fmt)
    if fmt == "html":
        return _page(board, sections, figures)
    heading = {"md": "## {}\n\n", "html": "<h2>{}</h2>\n", "latex": "% {}\n"}[fmt]
    escape = html.escape if fmt == "html" else str  # suite, arm and model names are the user's: text, never markup
    return "\n\n".join(heading.format(escape(title)) + _frame(frame, fmt) for title, frame in sections) + "\n"


def _page(board: Leaderboard, sections: list[tuple[str, pd.DataFrame]], figures: tuple[str, ...]) -> str:
    """A page that stands alone (a stylesheet for borders and left-aligned headers over left-aligned cells, the caption
    and each section as a heading); pandas escapes every cell, jinja2 every title: names are the user's text."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string((resources.files("s2d_bench") / "templates" / "leaderboard.html").read_text(encoding="utf-8"))
    tables = [(title, _frame(frame, "html")) for title, frame in sections]
    return template.render(suite=board.suite, caption=board.scope, sections=tables, figures=figures)


def publish(board: Leaderboard, folder: Path) -> list[Path]:
    """Write <suite>.md/.csv/.html/.tex, <suite>.png (the stage plot) and <suite>-ablation.png into `folder`; return
    the paths."""
    from s2d_bench.leaderboards.plot import plot_ablation, plot_trajectories

    folder.mkdir(parents=True, exist_ok=True)
    figures = []
    if board.trajectories:
        path = folder / f"{board.suite}.png"
        plot_trajectories(board.trajectories, board.suite, path)
        figures.append(path)
    if any(not frame.empty for frame in board.ablations.values()):
        path = folder / f"{board.suite}-ablation.png"
        plot_ablation(board.ablations, board.suite, path)
        figures.append(path)
    paths = []
    for fmt in FORMATS:
        path = folder / f"{board.suite}.{SUFFIX[fmt]}"
        path.write_text(render(board, fmt, figures=tuple(f.name for f in figures)), encoding="utf-8")
        paths.append(path)
    return paths + figures
