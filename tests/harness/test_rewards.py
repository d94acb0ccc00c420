"""RL rewards go through the grading pool: a completion that would hang math-verify costs one
timeout (reward 0, counted in the stage's metrics), never the training run."""

import dataclasses

from s2d_bench.backends import BACKENDS
from s2d_bench.config import load_config
from s2d_bench.generation.hf import HFEngine
from s2d_bench.harness.grading import GradingPool
from s2d_bench.harness.rewards import PoolReward
from s2d_bench.models.builders import tiny_qwen3_student
from s2d_bench.stages import STAGES, StageInputs
from s2d_bench.tasks.base import Problem, Splits

TOWER = "\\boxed{9^{9^{9^{9}}}}"  # sympy evaluates the power tower: a C-level hang no alarm can stop
HUGE = "\\boxed{" + "7" * 100_000 + "}"


def test_pool_reward_grades_with_the_registered_grader_and_counts_timeouts():
    problems = [Problem("a", "1+1=", "2"), Problem("b", "x", "\\frac{1}{2}")] * 2
    with GradingPool(workers=2, timeout=2.0) as pool:
        scores = PoolReward("math_verify", pool)(["\\boxed{2}", "\\boxed{0.5}", TOWER, "no box"], problems)
    assert scores.rewards == [1.0, 1.0, 0.0, 0.0] and scores.timeouts == 1


def test_a_grpo_stage_with_pathological_answers_finishes_and_counts_its_timeouts(monkeypatch):
    real = HFEngine.rollouts

    def adversarial(self, prompts, sampling, seeds):  # the first two samples of every step answer badly
        roll = real(self, prompts, sampling, seeds)
        return dataclasses.replace(roll, texts=[TOWER, HUGE, *roll.texts[2:]])

    monkeypatch.setattr(HFEngine, "rollouts", adversarial)
    cfg = load_config(None, ["stages.teacher_rl.steps=2", "stages.teacher_rl.prompts_per_step=2", "stages.teacher_rl.samples_per_prompt=2",
                             "stages.teacher_rl.max_new_tokens=4"])
    backend = BACKENDS.get("torch")(cfg)
    model, tok = tiny_qwen3_student(seed=0)
    problems = [Problem(f"p{i}", f"{i}+{i}=", str(2 * i)) for i in range(4)]
    rows: list[dict] = []
    with GradingPool(workers=2, timeout=1.0) as pool:
        x = StageInputs(backend, model, None, tok, Splits(problems, [], []), PoolReward("math_verify", pool), cfg.stages.teacher_rl, 0,
                        rows.append)
        report = STAGES.get("teacher_rl").run(x)
    assert report.steps == 2
    # the tower times out every step; the long answer is either graded (wrong) or times out, by machine speed
    assert all(1.0 <= r["grading_timeouts"] <= 2.0 for r in rows) and len(rows) == 2
    assert all(r["reward"] <= 0.5 for r in rows)


def test_pool_reward_applies_each_problems_answer_rules_and_refuses_completions_that_do_not_pair_with_problems(agreeing_pool):
    import pytest

    from s2d_bench.harness.rewards import Scores
    from s2d_bench.tasks.answer_rules import AnswerRules

    problems = [Problem("a", "how long?", "7", rules=AnswerRules(unit="cm")), Problem("b", "x", "3")]
    reward = PoolReward("exact", None)  # an in-process grader: no pool needed
    assert reward(["\\boxed{7 cm}", "\\boxed{4}"], problems) == Scores([1.0, 0.0], 0)  # 7 cm is 7 under a's unit
    with pytest.raises(ValueError, match="3 completions for 2 problems"):
        reward(["\\boxed{7}", "\\boxed{3}", "\\boxed{3}"], problems)

    # the stage's pool grades (a pool per call would start its workers every step); this one says every answer is right
    assert PoolReward("math_verify", agreeing_pool)(["\\boxed{8}", "no box"], problems) == Scores([1.0, 0.0], 0)
    assert agreeing_pool.asked == [("math_verify", "7", "8")]
