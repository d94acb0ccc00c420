import json

import pytest

from s2d_bench.diagnostics import c2, reward_gain
from s2d_bench.models import MODELS


def test_c2_is_zero_for_a_student_equal_to_its_teacher_and_positive_otherwise():
    teacher, tok = MODELS.get("tiny-qwen3-student")(seed=0)
    same, _ = MODELS.get("tiny-qwen3-student")(seed=0)
    other, _ = MODELS.get("tiny-qwen3-student")(seed=1)
    record = c2(teacher, other, same, tok, ["1+2=", "33+4="], max_new_tokens=6, seed=0)
    assert record["kl_forward_after"] == pytest.approx(0.0, abs=1e-6)
    assert record["kl_reverse_after"] == pytest.approx(0.0, abs=1e-6)
    assert record["kl_forward_before"] > 1e-3 and record["kl_reverse_before"] > 1e-3
    assert record["prompts"] == 2


def test_reward_gain_compares_the_last_tenth_of_training_with_the_first(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": i, "reward": 0.1 if i < 10 else 0.6}) + "\n" for i in range(100)))
    assert reward_gain(path) == pytest.approx({"reward_first": 0.1, "reward_last": 0.6, "reward_gain": 0.5})
    assert reward_gain(tmp_path / "missing.jsonl") is None
