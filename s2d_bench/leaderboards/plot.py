"""The stage plot: accuracy after each stage, one line per arm, one panel per task."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from s2d_bench.leaderboards.tables import STAGE_ORDER, split_label  # noqa: E402

LABELS = {"base": "base student", "teacher_rl": "1: teacher RL\n(teacher)", "warmup": "2a: warmup", "opd": "2b: OPD",
          "student_rl": "3: student RL", "replay": "3: replay\ncontrol"}


def plot_trajectories(trajectories: dict[str, pd.DataFrame], suite: str, path: Path) -> None:
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
            xs = [x_of[s] for s in points["stage"]]
            style = {"linewidth": 2.6, "color": "black"} if name == "full" else {"linewidth": 1.4, "color": colors[name]}
            style["linestyle"] = ["-", "--", ":", "-."][labels.index(label) % 4]  # one dash per backend, one colour per arm
            ax.plot(xs, points["mean"], marker="o", markersize=4, label=arm, **style)
        ax.set_xticks(range(len(present)), [LABELS.get(s, s) for s in present], fontsize=8)
        ax.set_ylabel(f"{task}: avg@k (mean over seeds)")
        ax.set_title(f"{suite}: accuracy after each stage")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
