"""Stage 3, student RL: max_theta E_{x~labeled, y~pi_S(.|x)} [r(x, y)] with GRPO, r in {0, 1}.

After the bridge the student starts near the RL teacher's behaviour, where sparse reward works;
on a cold student the same stage is the direct-GRPO baseline (arm `direct-grpo`, with its own
budget in the arm's overrides). Labeled prompts come from the same scarce pool as stage 1.
Run alone: `s2d-bench run 'arms={s: {stages: [student_rl]}}'`.
"""

from s2d_bench.backends.base import RLJob, StageReport
from s2d_bench.stages import Stage, StageInputs, nonempty


def run(x: StageInputs) -> StageReport:
    job = RLJob("student_rl", x.model, x.tok, nonempty(x.splits.labeled, "student_rl", "labeled problems"), x.reward, x.cfg, x.seed, x.log,
                x.checkpoints)
    return x.backend.student_rl(job)


STAGE = Stage("student_rl", trains="student", needs_teacher=False, uses_labels=True, run=run)
