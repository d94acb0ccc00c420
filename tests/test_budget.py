"""The memory model against what autograd really keeps: activation bytes of a micro-batch, measured with
saved-tensor hooks on tiny Qwen3 shapes (float32, CPU), with and without activation checkpointing."""

from dataclasses import replace

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
    assert est == {"weights": 2000, "work": (3 * 10 + 3 * 4 * 20) * kv + 3 * 4 * 100 * 12}  # 20 new tokens: no growth
    grown = budget.eval_bytes(shape, 1000, 3, 4, 10, 1024, 2)["work"]  # while growing from 512 to 1,024 positions
    assert grown == (3 * 10 + 3 * 4 * (512 + 1024)) * kv + 3 * 4 * 100 * 12
    big = budget.Shape(layers=2, hidden=16, intermediate=32, heads=2, kv_heads=2, head_dim=8, vocab=120)
    c2 = budget.c2_bytes(big, shape, {"teacher": 5000, "student": 1000}, 3, 4, 10, 20, 7, 2)
    n, length = 12, 30
    scoring = (n * length * (16 + 8 + 3 * 32 + 4 * 16 + length) + n * 20 * (16 + 8)) * 2 + 7 * 120 * 4 * 6
    sampling = budget.eval_bytes(big, 0, 3, 4, 10, 20, 2)["work"]
    assert c2 == {"weights": 12000, "work": max(scoring, sampling), "sampling": sampling, "scoring": scoring}
    assert budget.c2_bytes(big, shape, {"teacher": 5000, "student": 1000}, 3, 4, 10, 20, 0, 2)["work"] >= scoring  # chunk 0: all
    served = budget.c2_bytes(None, shape, {"teacher": 5000, "student": 1000}, 3, 4, 10, 20, 7, 2)  # the teacher on its server
    alone = (n * length * (8 + 3 * 16 + 4 * 8 + length) + n * 20 * 8) * 2 + 7 * 100 * 4 * 2  # the student's hidden states and head only
    student_sampling = budget.eval_bytes(shape, 0, 3, 4, 10, 20, 2)["work"]
    assert served == {"weights": 2000, "work": max(alone, student_sampling), "sampling": student_sampling, "scoring": alone}


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


def test_deepspeed_layout_reads_precision_zero_and_offload_from_the_config():
    from s2d_bench import budget
    from s2d_bench.config import DeepSpeedConfig

    assert budget.deepspeed_layout(DeepSpeedConfig(zero_stage=3, bf16=True, offload_optimizer=True, offload_params=True, teacher_zero3=True), 8) == \
        {"precision": "bf16-mixed", "zero_stage": 3, "world": 8, "offload_optimizer": True, "offload_params": True, "teacher_zero3": True}
    assert budget.deepspeed_layout(DeepSpeedConfig(zero_stage=1, bf16=False), 2) == \
        {"precision": "fp32", "zero_stage": 1, "world": 2, "offload_optimizer": False, "offload_params": False, "teacher_zero3": False}


def test_one_micro_batch_of_training_by_hand():
    """A layer of 2 x (6 x 8 + 4 x 16 + 4 x (2 + 1) x 4 + 2 x 2 + 4) = 2 x 168 elements a token (3 layers), the padded
    mask, a chunk of logits (4 live copies, 2 more for a teacher) and the teacher's hidden states."""
    from s2d_bench import budget

    trained = budget.Shape(layers=3, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=50)
    teacher = budget.Shape(layers=5, hidden=12, intermediate=16, heads=2, kv_heads=1, head_dim=6, vocab=50)
    assert trained.layer_elements() == 6 * 8 + 4 * 16 + 4 * 3 * 4 + 2 * 2 + 4 == 168 and trained.kv_bytes(2) == 2 * 3 * 1 * 4 * 2
    st = budget.StageShape(sequences=6, samples=2, prompt_tokens=5, new_tokens=7, micro_batch=2, checkpointing=False, chunk=4, kv_budget=0)
    tokens = 2 * 12  # the micro-batch's sequences x (prompt + new)
    plain = budget.training_bytes(trained, None, st, 2)
    assert plain == {"activations": (3 * 168 * tokens + 2 * 8 * tokens + 4 * 2 * 12 * 12) * 2, "logits": 4 * 50 * 4 * 4,
                     "teacher_hidden": 0.0}
    ckpt = budget.training_bytes(trained, teacher, replace(st, checkpointing=True, chunk=0, micro_batch=0), 4)
    tokens = 6 * 12  # micro_batch 0: every sequence at once; chunk 0: every completion position
    assert ckpt == {"activations": (3 * 8 * tokens + 168 * tokens + 2 * 8 * tokens + 2 * 6 * 12 * 12) * 4,
                    "logits": 6 * 7 * 50 * 4 * 6, "teacher_hidden": 6 * 7 * 12 * 4}
    assert budget.training_bytes(trained, None, replace(st, chunk=100), 2)["logits"] == 2 * 7 * 50 * 4 * 4  # a chunk within the batch


def test_a_stage_estimate_by_hand_states_teacher_rollout_gathering_and_the_peak():
    """Warmup under ZeRO-3 on 4 ranks, bf16: the student's sharded states, the teacher whole (or sharded with
    teacher_zero3, then gathered to sample), the larger of sampling and the update; vLLM's share replaces the KV."""
    from s2d_bench import budget

    G = budget.GIB
    shape = budget.Shape(layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, head_dim=16, vocab=1000)
    params, shapes = {"teacher": 4 * G, "student": G}, {"teacher": shape, "student": shape}
    st = budget.StageShape(sequences=8, samples=1, prompt_tokens=16, new_tokens=48, micro_batch=4, checkpointing=True, chunk=32, kv_budget=0)
    layout = {"zero_stage": 3, "world": 4, "offload_optimizer": False, "offload_params": True, "teacher_zero3": False}
    row = budget.stage_estimate("warmup", "student", params, shapes, st, "teacher", True, budget.BF16_MIXED, layout)
    states = G * (2 + 12) / 4 + 4 * G * 2  # grads and Adam sharded (weights offloaded), the teacher whole in bf16
    rollout = (8 * 16 + 8 * 48) * shape.kv_bytes(2) + 8 * 1000 * 12  # the step's 8 prompts at once: their KV, a step's logits
    train = budget.training_bytes(shape, shape, st, 2)
    assert row["states_gib"] == states / G and row["host_gib"] == 2 / 4 and row["rollout_gib"] == rollout / G
    assert row["gathered_gib"] == 0.0 and row["device_gib"] == (states + max(rollout, sum(train.values()))) / G
    assert (row["stage"], row["trains"], row["params"], row["micro_batch"], row["sequences"], row["checkpointing"]) == \
        ("warmup", "student", G, 4, 8, True)
    assert {k: row[f"{k}_gib"] for k in train} == {k: v / G for k, v in train.items()}
    parts = budget.trained_parts(G, budget.BF16_MIXED, 3, 4, False, True)
    assert (row["grads_gib"], row["optimizer_gib"], row["step_gib"]) == (parts["grads"] / G, parts["optimizer"] / G, parts["step"] / G)
    offloaded = budget.stage_estimate("warmup", "student", params, shapes, st, "teacher", True, budget.BF16_MIXED, {**layout, "offload_optimizer": True})
    assert offloaded["optimizer_gib"] == offloaded["step_gib"] == 0.0 and offloaded["host_gib"] > row["host_gib"]
    assert offloaded["states_gib"] == row["states_gib"] - (parts["optimizer"]) / G  # Adam's states leave the device
    sharded = budget.stage_estimate("warmup", "student", params, shapes, st, "teacher", True, budget.BF16_MIXED, {**layout, "teacher_zero3": True})
    assert sharded["states_gib"] == (G * 14 / 4 + 4 * G * 2 / 4) / G and sharded["gathered_gib"] == 4 * 2 * 3 / 4
    assert sharded["rollout_gib"] == (rollout + 4 * G * 2 * 3 / 4) / G
    served = budget.stage_estimate("warmup", "student", params, shapes, st, "teacher", True, budget.BF16_MIXED, layout, vllm_gib=5.0)
    assert served["rollout_gib"] == 5.0 and served["gathered_gib"] == 0.0
    rl = budget.stage_estimate("teacher_rl", "teacher", params, shapes, st, "teacher", False, budget.FP32, layout)
    assert rl["states_gib"] == 4 * (4 + 4 + 8) / 4 - 4 * 4 / 4 and rl["gathered_gib"] == 4 * 4 * 3 / 4  # its own ZeRO-3 weights, gathered
    fp32 = budget.trained_parts(4 * G, budget.FP32, 3, 4, False, True)  # torch's AdamW: a step's fp32 temporary, sharded
    assert rl["step_gib"] == fp32["step"] / G == 4 * 4 / 4 and rl["grads_gib"] == fp32["grads"] / G
    assert rl["teacher_hidden_gib"] == 0.0 and rl["logits_gib"] == 32 * 1000 * 4 * 4 / G  # no teacher beside GRPO: 4 live copies of a chunk
    whole = budget.stage_estimate("teacher_rl", "teacher", params, shapes, st, "teacher", False, budget.FP32, {**layout, "zero_stage": 2,
                                                                                                                 "offload_params": False})
    assert whole["gathered_gib"] == 0.0 and whole["states_gib"] == 4 * (4 + (4 + 8) / 4)


def test_shapes_read_from_configs_fill_in_what_older_configs_leave_out():
    from types import SimpleNamespace

    from s2d_bench import budget

    old = SimpleNamespace(num_hidden_layers=2, hidden_size=100, intermediate_size=300, num_attention_heads=3, vocab_size=10)
    assert budget.Shape.of(old) == budget.Shape(2, 100, 300, 3, 3, 33, 10)  # no kv heads: as many as heads; head_dim hidden // heads
    new = SimpleNamespace(**vars(old), num_key_value_heads=1, head_dim=64)
    assert budget.Shape.of(new) == budget.Shape(2, 100, 300, 3, 1, 64, 10)
    assert budget.trained_bytes(10, budget.FP32, 1, 2, False, False) == (10 * 4 + 10 * 4 + 10 * 8 / 2, 0.0)  # ZeRO-1: Adam only


def test_the_printed_estimate_names_every_figure_in_its_column():
    from s2d_bench import budget

    stage = {"stage": "opd", "trains": "student", "micro_batch": 4, "states_gib": 1.5, "reference_gib": 0.25, "rollout_gib": 2.0,
             "activations_gib": 3.125, "logits_gib": 0.5, "teacher_hidden_gib": 0.75, "device_gib": 6.0, "host_gib": 0.0}
    phase = {"phase": "eval math500", "model": "teacher", "batch": 2, "weights_gib": 15.25, "work_gib": 27.1, "device_gib": 42.35}
    report = {"params": {"teacher": 70_553_706_496, "student": 123_456_789_012}, "backend": "deepspeed", "precision": "bf16-mixed", "zero_stage": 2,
              "world": 8, "device_memory_gib": 74.5, "stages": [stage], "phases": [phase]}
    assert budget.render(report).splitlines() == [
        "preflight: teacher 70,553.7M params, student 123,456.8M params; backend deepspeed, bf16-mixed, ZeRO-2, 8 rank(s); device memory 74 GiB",
        "  memory per rank, GiB: states (GRPO's reference model, ref, included) + max(rollout KV, activations + logits + teacher hidden) = device",
        "    stage       trains    micro   states      ref  rollout    activ   logits  t.hidden   device     host",
        "    opd         student       4     1.50     0.25     2.00     3.12     0.50      0.75     6.00     0.00",
        "  after each stage, per rank, GiB: weights + largest batch (sampling, or C2's scoring) = device",
        "    phase                      model     batch  weights    batch   device",
        "    eval math500               teacher       2    15.25    27.10    42.35"]
    served = budget.render({**report, "served_teacher": "http://127.0.0.1:8000 (qwen3-8b-rl)"}).splitlines()[0]
    assert served.startswith("preflight: teacher served at http://127.0.0.1:8000 (qwen3-8b-rl), student 123,456.8M params; ")
    unknown = budget.render({**report, "device_memory_gib": None, "phases": []}).splitlines()
    assert unknown[0].endswith("device memory not known (set preflight.device_memory_gb)") and len(unknown) == 4


def test_the_shared_prefix_cache_peaks_while_it_doubles():
    """Positions a sample's buffer holds at its peak: 256 first, doubled up to max_new_tokens, the old buffer beside
    the new while it copies (the sampler's own constant)."""
    from s2d_bench import budget
    from s2d_bench.generation.shared_prefix import SharedPrefixLayer

    assert SharedPrefixLayer.INITIAL == 256
    assert [budget.generated_positions(n) for n in (16, 256, 257, 384, 1024, 8192)] == [16, 256, 256 + 257, 256 + 384, 512 + 1024,
                                                                                      4096 + 8192]


def test_a_rollout_samples_in_the_engines_batches():
    """A step's rollouts are sampled as evaluation samples: rollout.prompts_per_batch prompts (0: the rank's share)
    within rollout.max_batch_tokens, so a smaller batch means a smaller estimate."""
    from s2d_bench import budget

    shape = budget.Shape(layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=100)
    st = budget.StageShape(sequences=32, samples=4, prompt_tokens=10, new_tokens=20, micro_batch=0, checkpointing=False, chunk=0,
                           kv_budget=0)
    per_prompt = (10 + 4 * 20) * shape.kv_bytes(4) + 4 * 100 * 12
    assert budget.rollout_bytes(shape, st, 4) == 8 * per_prompt
    assert budget.rollout_bytes(shape, replace(st, per_batch=3), 4) == 3 * per_prompt
    assert budget.rollout_bytes(shape, replace(st, kv_budget=2 * 4 * 30), 4) == 2 * per_prompt


def test_each_phase_adds_what_the_estimate_says():
    """What each phase adds at its start (what phasemem measures): sampling its batch; an update its gradients and
    then the larger of its activations and AdamW's first step (its states and the foreach copy); the reference its
    weights; and TRL's warmup holds every step's rollouts on the host."""
    from s2d_bench import budget

    row = {"rollout_gib": 1.0, "grads_gib": 2.0, "activations_gib": 3.0, "logits_gib": 0.5, "teacher_hidden_gib": 0.25,
           "optimizer_gib": 4.0, "step_gib": 2.0, "reference_gib": 0.0}
    assert budget.phase_growth(row) == {"rollout": 1.0, "update": 2.0 + 6.0}
    assert budget.phase_growth({**row, "activations_gib": 9.0, "reference_gib": 1.5}) == {"rollout": 1.0, "update": 2.0 + 9.75,
                                                                                        "reference": 1.5}
    assert budget.trained_parts(10, budget.FP32, 1, 2, False, False)["step"] == 10 * 4 / 2  # sharded with the optimizer
    assert budget.trained_parts(10, budget.FP32, 0, 1, True, False)["step"] == 0.0  # offloaded: stepped on the host
    assert budget.trained_parts(10, budget.BF16_MIXED, 0, 1, False, False)["step"] == 0.0  # fused, in place
    assert budget.host_rollout_bytes(6, 10, 20) == 6 * 30 * 144


def test_a_trained_models_parts_by_zero_stage_and_offload():
    """fp32 (4 + 4 + 8 bytes, and AdamW's 4-byte step copy) on 2 ranks: ZeRO-1 shards the optimizer (and its step),
    ZeRO-2 also the gradients, ZeRO-3 also the weights; offload moves the optimizer (and its step) or the weights to the host."""
    from s2d_bench import budget

    def parts(zero, offload_optimizer=False, offload_params=False):
        return budget.trained_parts(10, budget.FP32, zero, 2, offload_optimizer, offload_params)

    assert parts(0) == {"weights": 40, "grads": 40, "optimizer": 80, "step": 40, "host": 0.0}
    assert parts(1) == {"weights": 40, "grads": 40, "optimizer": 40, "step": 20, "host": 0.0}
    assert parts(2) == {"weights": 40, "grads": 20, "optimizer": 40, "step": 20, "host": 0.0}
    assert parts(3) == {"weights": 20, "grads": 20, "optimizer": 40, "step": 20, "host": 0.0}
    assert parts(3, offload_optimizer=True) == {"weights": 20, "grads": 20, "optimizer": 0.0, "step": 0.0, "host": 40}
    assert parts(3, offload_params=True) == {"weights": 0.0, "grads": 20, "optimizer": 40, "step": 20, "host": 20}
    assert parts(3, True, True) == {"weights": 0.0, "grads": 20, "optimizer": 0.0, "step": 0.0, "host": 60}
    assert budget.trained_bytes(10, budget.FP32, 3, 2, True, True) == (20, 60)


def test_the_node_table_shows_each_phase_on_the_device_and_a_dash_for_phases_a_node_does_not_run():
    from s2d_bench import budget

    report = {"params": {"teacher": 2e6, "student": 1e6}, "backend": "torch", "precision": "fp32", "zero_stage": 0, "world": 1,
              "device_memory_gib": None, "stages": [], "phases": [],
              "nodes": [{"node": "base-student-1", "stage": "base", "role": "student", "phases": {"eval a": {"device_gib": 1.5},
                                                                                                  "eval b": {"device_gib": 2.25}}},
                        {"node": "opd-2", "stage": "opd", "role": "student",
                         "phases": {"rollout": {"device_gib": 3.0}, "update": {"device_gib": 4.5}, "reference": {"device_gib": 0.5},
                                    "eval a": {"device_gib": 1.0}, "c2": {"device_gib": 6.0}}},
                        {"node": "x-3", "stage": "opd", "role": "student", "phases": {"rollout": {"device_gib": 3.0}}}]}  # none evaluated
    lines = budget.render(report).splitlines()
    assert lines[0].startswith("preflight: teacher 2.0M params, student 1.0M params; backend torch") and len(lines) == 8
    assert lines[-5:-3] == ["  every node's phases, per rank, GiB on the device while each runs (eval: its largest benchmark; -: not run)",
                            "    node                         rollout   update      ref     eval       c2"]
    assert lines[-3] == "    base-student-1" + " " * 14 + f"{'-':>9}{'-':>9}{'-':>9}{2.25:9.2f}{'-':>9}"
    assert lines[-2] == "    opd-2" + " " * 23 + "".join(f"{v:9.2f}" for v in (3.0, 4.5, 0.5, 1.0, 6.0))
    assert lines[-1] == "    x-3" + " " * 25 + f"{3.0:9.2f}" + f"{'-':>9}" * 4
