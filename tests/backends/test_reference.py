"""GRPO's KL anchor: a frozen copy of the policy in the weights' dtype, made without a transient at the policy's own
precision, and counted by the preflight."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from s2d_bench.backends.runtime import cast_copy
from s2d_bench.models import MODELS


class _Created(TorchDispatchMode):
    """Every tensor an aten op returns while active: (dtype, numel, where its data lies)."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[tuple[torch.dtype, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - the dispatch protocol
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.made.append((t.dtype, t.numel(), t.data_ptr()))
        return out


def test_a_bf16_reference_of_an_fp32_policy_is_made_a_tensor_at_a_time_and_equals_the_cast_policy():
    policy, _ = MODELS.get("tiny-qwen3-student")(seed=0)
    assert all(p.dtype == torch.float32 for p in policy.parameters())
    with _Created() as seen:
        ref = cast_copy(policy, "cpu", torch.bfloat16)
    largest, own = max(p.numel() for p in policy.parameters()), {p.data_ptr() for p in policy.parameters()}
    copies = [n for dtype, n, at in seen.made if dtype == torch.float32 and n == largest and at not in own]  # views are not copies
    assert not copies  # no fp32 copy of a weight, ever: the largest is made in bf16 only
    cast = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in policy.state_dict().items()}
    assert ref.state_dict().keys() == cast.keys() and all(torch.equal(ref.state_dict()[k], v) for k, v in cast.items())
    pairs = list(zip(policy.parameters(), ref.parameters()))
    assert all(q.data_ptr() != p.data_ptr() and q.requires_grad == p.requires_grad for p, q in pairs)
    if policy.config.tie_word_embeddings:
        assert ref.get_output_embeddings().weight is ref.get_input_embeddings().weight  # tied weights stay one tensor
    same = cast_copy(policy)  # no dtype: the policy's own, as the torch backend's reference is
    assert all(q.dtype == p.dtype and torch.equal(p, q) for p, q in zip(policy.parameters(), same.parameters()))
    with torch.no_grad():
        next(policy.parameters()).add_(1.0)
    assert not torch.equal(next(policy.parameters()), next(same.parameters()))  # a copy: training the policy leaves it


def test_a_cast_copy_casts_only_floating_tensors_and_keeps_which_parameters_train():
    """Integer buffers (step counters, position ids) keep their dtype in a bf16 copy, a frozen parameter stays frozen, and
    the copy shares no storage with the model it was made from."""
    model = torch.nn.Linear(3, 2)
    model.register_buffer("count", torch.tensor([7], dtype=torch.int64))
    model.bias.requires_grad_(False)
    copy = cast_copy(model, "cpu", torch.bfloat16)
    assert copy.count.dtype == torch.int64 and copy.count.item() == 7
    assert copy.weight.dtype == copy.bias.dtype == torch.bfloat16
    assert (copy.weight.requires_grad, copy.bias.requires_grad) == (True, False)
    assert copy.weight.data_ptr() != model.weight.data_ptr() and torch.equal(copy.weight, model.weight.to(torch.bfloat16))
    same = cast_copy(model)  # no dtype: every tensor as it was
    assert same.weight.dtype == torch.float32 and same.count.dtype == torch.int64 and same.weight.data_ptr() != model.weight.data_ptr()


def test_the_preflight_counts_the_reference_model_in_the_weights_precision_and_partitioned_under_zero3():
    from dataclasses import replace

    from s2d_bench import budget

    shape = budget.Shape(layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, head_dim=16, vocab=1000)
    params, shapes = {"teacher": 4_000_000, "student": 1_000_000}, {"teacher": shape, "student": shape}
    st = budget.StageShape(sequences=8, samples=4, prompt_tokens=16, new_tokens=32, micro_batch=0, checkpointing=False, chunk=0, kv_budget=0)
    for precision, zero, world, expected in ((budget.FP32, 0, 1, 4_000_000), (budget.BF16_MIXED, 2, 4, 2_000_000),
                                             (budget.BF16_MIXED, 3, 4, 500_000)):
        layout = {"zero_stage": zero, "world": world, "offload_optimizer": False, "offload_params": False, "teacher_zero3": False}
        without = budget.stage_estimate("student_rl", "student", params, shapes, st, "student", False, precision, layout)
        anchored = budget.stage_estimate("student_rl", "student", params, shapes, replace(st, reference=True), "student", False,
                                         precision, layout)
        added = (anchored["states_gib"] - without["states_gib"]) * budget.GIB
        assert added == anchored["reference_gib"] * budget.GIB == expected and without["reference_gib"] == 0.0
        assert anchored["device_gib"] - without["device_gib"] == anchored["reference_gib"]
