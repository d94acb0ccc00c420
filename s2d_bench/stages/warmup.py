"""Stage 2a, forward-KL warmup: min_theta E_{x, y~pi_T} sum_t KL(pi_T(.|x,y<t) || pi_S(.|x,y<t)).

The student is trained on the teacher's own rollouts against the full teacher distribution at
every position: the mass-covering direction brings the student's support over the teacher's
before on-policy distillation (the paper's condition C2). Prompts only, no labels. The paper
does not say whether its warmup was token-level or top-k; this is the exact full-vocabulary,
per-token form (the authors' `forward_kl` loss), which sequence-level SFT on teacher samples
approximates. Run alone: `s2d-bench run 'arms={w: {stages: [warmup]}}'` (raw teacher).
"""

from s2d_bench.backends.base import DistillJob, StageReport
from s2d_bench.stages import Stage, StageInputs, nonempty


def run(x: StageInputs) -> StageReport:
    assert x.teacher is not None
    prompts = nonempty([p.prompt for p in x.splits.unlabeled], "warmup", "unlabeled prompts")
    return x.backend.warmup(DistillJob("warmup", x.model, x.teacher, x.tok, prompts, x.cfg, x.seed, x.log, x.workdir, x.checkpoints, x.teacher_cache))


STAGE = Stage("warmup", trains="student", needs_teacher=True, uses_labels=False, run=run, samples_from="teacher")
