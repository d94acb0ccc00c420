"""Stage 2b, on-policy distillation: min_theta E_{x, y~pi_S} sum_t KL(pi_S(.|x,y<t) || pi_T(.|x,y<t)).

The student samples; the teacher scores every position of the student's own completions over
the full vocabulary: a dense, per-token signal on exactly the states the student visits.
`estimator: sampled` swaps the exact KL for the single-sample estimator (log p_T - log p_S of
the sampled token as a per-token advantage); the authors' code uses the exact form, the default.
Run alone: `s2d-bench run 'arms={o: {stages: [teacher_rl, opd]}}'`.
"""

from s2d_bench.backends.base import DistillJob, StageReport
from s2d_bench.stages import Stage, StageInputs, nonempty


def run(x: StageInputs, name: str = "opd") -> StageReport:
    assert x.teacher is not None
    prompts = nonempty([p.prompt for p in x.splits.unlabeled], name, "unlabeled prompts")
    return x.backend.opd(DistillJob(name, x.model, x.teacher, x.tok, prompts, x.cfg, x.seed, x.log, x.workdir, x.checkpoints, x.teacher_cache))


STAGE = Stage("opd", trains="student", needs_teacher=True, uses_labels=False, run=run)
