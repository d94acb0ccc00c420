"""Stage 1, teacher RL: max_theta E_{x~labeled, y~pi_T(.|x)} [r(x, y)] with GRPO, r in {0, 1}.

The scarce labeled prompts are spent here, on the strongest model, where sparse reward has the
most to work with (the paper's condition C1: the teacher must become "reward-shaped"). The GRPO
variant (clip range, token-mean aggregation, optional KL to the initial policy) is set in
`stages.teacher_rl`; the paper's exact settings are unknown (../shared/paper.md section 1).
Run alone: `s2d-bench run 'arms={t: {stages: [teacher_rl]}}'`.
"""

from s2d_bench.backends.base import RLJob, StageReport
from s2d_bench.stages import Stage, StageInputs, nonempty


def run(x: StageInputs) -> StageReport:
    job = RLJob("teacher_rl", x.model, x.tok, nonempty(x.splits.labeled, "teacher_rl", "labeled problems"), x.reward, x.cfg, x.seed, x.log,
                x.checkpoints)
    return x.backend.teacher_rl(job)


STAGE = Stage("teacher_rl", trains="teacher", needs_teacher=False, uses_labels=True, run=run)
