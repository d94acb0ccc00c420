"""The leaderboard's figures: the stage plot (accuracy after each stage, one line per arm, one panel per
task) and the ablation figure (each arm's final score and its delta against `full`, with intervals)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from s2d_bench.leaderboards.tables import STAGE_ORDER, split_label  # noqa: E402

LABELS = {"base": "base student", "teacher_rl": "1: teacher RL\n(teacher, ★)", "warmup": "2a: warmup", "opd": "2b: OPD",
          "student_rl": "3: student RL", "replay": "3: replay\ncontrol"}
TEACHER_STAGES = {"teacher_rl"}  # points that are the teacher's score, not the student's: never on a student's line


def plot_trajectories(trajectories: dict[str, pd.DataFrame], suite: str, path: Path) -> plt.Figure:
    tasks = [t for t, frame in trajectories.items() if not frame.empty]
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(9.5 * max(1, len(tasks)), 5.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        frame = trajectories[task]
        present = [s for s in STAGE_ORDER if s in set(frame["stage"])]
        x_of = {stage: i for i, stage in enumerate(present)}
        names = list(dict.fromkeys(split_label(arm)[0] for arm in frame["arm"]))
        labels = sorted({split_label(arm)[1] for arm in frame["arm"]})  # '' or each config's label (a backend)
        colors = {name: f"C{i % 10}" for i, name in enumerate(n for n in names if n != "full")}
        for arm, points in frame.groupby("arm", sort=False):
            name, label = split_label(arm)
            style = {"linewidth": 2.6, "color": "black"} if name == "full" else {"linewidth": 1.4, "color": colors[name]}
            style["linestyle"] = ["-", "--", ":", "-."][labels.index(label) % 4]  # one dash per backend, one colour per arm
            student = points[~points["stage"].isin(TEACHER_STAGES)]
            ax.plot([x_of[s] for s in student["stage"]], student["mean"], marker="o", markersize=4, label=arm, **style)
            teacher = points[points["stage"].isin(TEACHER_STAGES)]
            ax.scatter([x_of[s] for s in teacher["stage"]], teacher["mean"], marker="*", s=70, color=style["color"], zorder=3)
        ax.set_xticks(range(len(present)), [LABELS.get(s, s) for s in present], fontsize=8)
        ax.set_ylabel(f"{task}: avg@k (mean over seeds)")
        ax.set_title(f"{suite}: the student after each stage (★: the teacher after stage 1)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig  # closed: its artists remain, for tests


def _backend(label: str) -> str:
    return label.rstrip("]") or "this config"


def plot_ablation(frames: dict[str, pd.DataFrame], suite: str, path: Path) -> plt.Figure:
    """The figure papers use for ablations: one row per arm, its final avg@k (left) and its delta against `full`
    (right), each with its 95% interval over seeds and problems (leaderboards/intervals.py); an arm run on several
    backends has a point per backend side by side, a colour each. `frames`: task -> tables.ablation_frame."""
    tasks = [t for t, frame in frames.items() if not frame.empty]
    height = max((len({split_label(a)[0] for a in frames[t]["arm"]}) for t in tasks), default=1)
    fig, axes = plt.subplots(max(1, len(tasks)), 2, figsize=(12, 1.6 + 0.5 * height * max(1, len(tasks))), squeeze=False)
    for (left, right), task in zip(axes, tasks):
        frame = frames[task]
        names = list(dict.fromkeys(split_label(arm)[0] for arm in frame["arm"]))
        labels = sorted({split_label(arm)[1] for arm in frame["arm"]})
        for row in frame.itertuples():
            name, label = split_label(row.arm)
            i = labels.index(label)
            y = names.index(name) + (i - (len(labels) - 1) / 2) * 0.22
            style = {"fmt": "o", "color": f"C{i}", "capsize": 3, "markersize": 5}
            left.errorbar(row.mean, y, xerr=[[row.mean - row.low], [row.high - row.mean]], **style,
                          label=_backend(label) if names.index(name) == 0 else None)
            if not np.isnan(row.delta):
                right.errorbar(row.delta, y, xerr=[[row.delta - row.delta_low], [row.delta_high - row.delta]], **style)
        seeds = frame.groupby(frame["arm"].map(lambda a: split_label(a)[0]))["seeds"].max()
        for ax in (left, right):  # one row per arm, named once (on the left): the right panel keeps its width for the deltas
            names_here = [f"{n} ({seeds[n]} seed{'' if seeds[n] == 1 else 's'})" for n in names] if ax is left else []
            ax.set_yticks(range(len(names)), names_here, fontsize=8)
            ax.set_ylim(len(names) - 0.5, -0.5)
            ax.grid(axis="x", alpha=0.3)
        right.axvline(0.0, color="grey", linestyle="--", linewidth=1)
        left.set_xlabel(f"{task}: final avg@k, 95% interval over seeds and problems")
        right.set_xlabel(f"{task}: Δ vs full (paired by seed and problem), 95% interval")
        left.set_title(f"{suite}: each arm's final score")
        right.set_title(f"{suite}: what dropping or replacing a stage costs")
        if len(labels) > 1:
            left.legend(fontsize=8, title="backend", loc="upper left")  # above the first row's low end: no interval there
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig  # closed: its artists remain, for tests
