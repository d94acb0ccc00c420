"""TensorBoard through torch's `SummaryWriter` (the `tensorboard` package writes the event files)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter


class TensorBoard:
    def __init__(self, log_dir: Path) -> None:
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, prefix: str, row: dict[str, Any], step: int) -> None:
        """Every finite number of `row` as the scalar `<prefix>/<key>` at `step` (the step itself is the axis)."""
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
        self.writer.flush()  # a killed run keeps every step it logged

    def close(self) -> None:
        self.writer.close()
