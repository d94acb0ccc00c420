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
