"""Matched replay control for stage 3: the same number of updates, no new labels.

The paper's question about stage 3 is whether its gain comes from the labels or just from more
training. This control continues the dense bridge (on-policy distillation from the same teacher
on unlabeled prompts) for as many updates as stage 3 makes; `s2d-bench ablate` sets
`replay.steps` to stage 3's `steps x updates_per_batch`. The paper reports such a control gains
<= 0.3 MATH points where stage 3 gains about 3.
"""

from s2d_bench.backends.base import StageReport
from s2d_bench.stages import Stage, StageInputs, opd


def run(x: StageInputs) -> StageReport:
    return opd.run(x, name="replay")


STAGE = Stage("replay", trains="student", needs_teacher=True, uses_labels=False, run=run)
