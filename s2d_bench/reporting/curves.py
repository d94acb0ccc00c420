"""curves.png beside a node's metrics.jsonl: the stage's training curves at a glance.

Panels, where the stage logged them: the signal it optimises (reward for GRPO, the KL it
minimises for the warmup and OPD, the loss for pretraining), the policy's entropy and the
completion length. Each panel shows the per-step values and a moving average.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

OBJECTIVE = {"teacher_rl": "reward", "student_rl": "reward", "warmup": "kl_forward", "opd": "kl_reverse"}  # else: loss
PANELS = ("entropy", "response_length")


def panels(frame: pd.DataFrame, stage: str) -> list[str]:
    """The metric columns a stage's plot shows, in order: what it optimises, then entropy and length."""
    wanted = [OBJECTIVE.get(stage, "loss"), *PANELS]
    return [c for c in wanted if c in frame]


def plot_metrics(metrics: Path, path: Path, stage: str, title: str) -> bool:
    """Write the PNG from a metrics.jsonl; False (no file) when it holds no steps or nothing to plot."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    if not rows:
        return False
    import matplotlib  # here, not at the top: every process that runs the pipeline imports this module, few plot (0.5 s)
    import pandas as pd

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(rows).sort_values("step")
    names = panels(frame, stage)
    if not names:
        return False
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    window = max(1, len(frame) // 20)
    for ax, name in zip(axes[0], names):
        values = pd.to_numeric(frame[name], errors="coerce")
        ax.plot(frame["step"], values, alpha=0.35, linewidth=1)
        ax.plot(frame["step"], values.rolling(window, min_periods=1).mean(), linewidth=2, label=f"mean of {window}")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
