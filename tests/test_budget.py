"""The memory model against what autograd really keeps: activation bytes of a micro-batch, measured with
saved-tensor hooks on tiny Qwen3 shapes (float32, CPU), with and without activation checkpointing."""

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from s2d_bench import budget
from s2d_bench.models.checkpointing import checkpointing


def _saved_bytes(model, ids) -> int:
    """Bytes of the distinct non-parameter tensors a forward leaves for backward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    total = [0]

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            total[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.get_decoder()(input_ids=ids).last_hidden_state.sum().backward()
    return total[0]


@pytest.mark.parametrize("shape", [dict(hidden_size=96, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=24),
                                   dict(hidden_size=64, intermediate_size=384, num_attention_heads=8, num_key_value_heads=2, head_dim=32)])
def test_the_activation_estimate_is_what_autograd_keeps(shape):
    config = Qwen3Config(vocab_size=64, num_hidden_layers=3, max_position_embeddings=512, **shape)
    model = Qwen3ForCausalLM(config)
    b, prompt, new = 3, 40, 24
    ids = torch.randint(0, 64, (b, prompt + new))
    st = budget.StageShape(sequences=b, samples=1, prompt_tokens=prompt, new_tokens=new, micro_batch=0, checkpointing=False,
                           chunk=8, kv_budget=0)
    estimate = budget.training_bytes(budget.Shape.of(config), None, st, 4)["activations"]
    assert _saved_bytes(model, ids) == pytest.approx(estimate, rel=0.05)
    with checkpointing(model, True):
        kept = _saved_bytes(model, ids)
    with_ckpt = budget.training_bytes(budget.Shape.of(config), None, st.__class__(**{**st.__dict__, "checkpointing": True}), 4)
    one_layer = budget.Shape.of(config).layer_elements() * b * (prompt + new) * 4
    assert kept <= with_ckpt["activations"] <= kept + 1.1 * one_layer  # layer inputs kept; one layer recomputed at a time


def test_evaluation_and_c2_phases_by_hand():
    """The hf engine's largest batch (problems per batch, within the token budget, never none), its shared-prefix
    cache at its last doubling, one decode step's logits; C2's scoring of a batch."""
    from s2d_bench import budget

    assert budget.sample_batch(63, 32, 16, 512, 8192, 0) == 32  # prompts_per_batch bounds it
    assert budget.sample_batch(63, 32, 16, 512, 8192, 262144) == 1  # 16 x 8,704 positions a problem: one fits
    assert budget.sample_batch(63, 32, 16, 512, 8192, 65536) == 1  # over the budget alone: still one (never none)
    assert budget.sample_batch(5, 0, 2, 10, 10, 0) == 5 and budget.sample_batch(5, 0, 2, 10, 10, 100) == 2
    shape = budget.Shape(layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=100)
    kv = 2 * 2 * 1 * 4 * 2  # bytes a position at itemsize 2
    est = budget.eval_bytes(shape, 1000, 3, 4, 10, 20, 2)
    assert est == {"weights": 2000, "work": (3 * 10 + 1.5 * 3 * 4 * 20) * kv + 3 * 4 * 100 * 12}
    big = budget.Shape(layers=2, hidden=16, intermediate=32, heads=2, kv_heads=2, head_dim=8, vocab=120)
    c2 = budget.c2_bytes(big, shape, {"teacher": 5000, "student": 1000}, 3, 4, 10, 20, 7, 2)
    n, length = 12, 30
    scoring = (n * length * (16 + 8 + 3 * 32 + 4 * 16 + length) + n * 20 * (16 + 8)) * 2 + 7 * 120 * 4 * 6
    sampling = budget.eval_bytes(big, 0, 3, 4, 10, 20, 2)["work"]
    assert c2 == {"weights": 12000, "work": max(scoring, sampling), "sampling": sampling, "scoring": scoring}
    assert budget.c2_bytes(big, shape, {"teacher": 5000, "student": 1000}, 3, 4, 10, 20, 0, 2)["work"] >= scoring  # chunk 0: all


def test_c2_scoring_measured_against_its_estimate():
    """benchmarks/phase_memory.py's C2 case at 4 problems (16 sequences of 384 tokens, a 6-layer teacher): the
    measured resident peak above the phase's start within -10% / +30% of budget.c2_bytes's scoring estimate."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "phase_memory.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, str(script), "--one", "c2", "4"], env=env, capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0.9 <= row["estimate_mib"] / row["measured_mib"] <= 1.3, row
