"""Which logit scores which completion token, decided once (models/sequences.py): every helper by hand."""

import math

import pytest
import torch
from conftest import decoder_rows

from s2d_bench.generation.protocol import render
from s2d_bench.models.builders import tiny_qwen3_student
from s2d_bench.models.sequences import (
    Batch, completion_hidden, completion_logits, encode_completions, expand_runs, join, join_texts, left_pad, positions, prompt_runs,
    right_pad, token_logprobs,
)
from s2d_bench.models.tokenizer import char_tokenizer


def test_encode_completions_is_the_text_plus_the_end_of_turn_token_and_nothing_else():
    tok = char_tokenizer()
    ids = encode_completions(tok, ["12", ""])
    assert ids == [[tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("2"), tok.eos_token_id], [tok.eos_token_id]]
    assert encode_completions(tok, []) == []  # no texts (a fast tokenizer's batch call refuses [])


def test_left_pad_by_hand():
    ids, mask = left_pad([[5, 6, 7], [8], []], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
    ids, _ = left_pad([[5]], pad_id=9)
    assert ids.tolist() == [[5]]
    ids, _ = left_pad([[1, 2], [3]], pad_id=9)
    assert ids.tolist() == [[1, 2], [9, 3]]
    ids, mask = left_pad([[], []], pad_id=9)  # nothing to pad to: (2, 0), as a row-by-row fill made it
    assert ids.shape == mask.shape == (2, 0) and ids.dtype == mask.dtype == torch.long


def test_right_pad_by_hand():
    ids, mask = right_pad([[5, 6, 7], [8], []], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
    ids, mask = right_pad([(1, 2), (3,)], pad_id=9)  # any sequence of ids
    assert ids.tolist() == [[1, 2], [3, 9]] and mask.tolist() == [[1, 1], [1, 0]]


def test_positions_start_at_zero_on_each_rows_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 0, 1]])
    assert positions(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 1, 1, 2]]


def test_join_by_hand():
    completion = torch.tensor([[4, 5, 0], [6, 0, 0]])
    c_mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    b = join([[1, 2], [3]], completion, c_mask, pad_id=0)
    assert b.prompt_len == 2
    assert b.input_ids.tolist() == [[1, 2, 4, 5, 0], [0, 3, 6, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 0], [0, 1, 1, 0, 0]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 3], [0, 0, 1, 1, 1]]
    assert b.completion_ids.tolist() == completion.tolist() and b.completion_mask.tolist() == c_mask.float().tolist()
    assert b.attention_mask.dtype == torch.long and b.completion_mask.dtype == torch.float32
    assert b.input_ids.device.type == "cpu"


def test_join_texts_renders_prompts_and_right_pads_completions():
    tok = char_tokenizer()
    b = join_texts(tok, ["1+1=", "22+3="], ["2", "25"])
    rendered = render(tok, ["1+1=", "22+3="], False)
    assert b.prompt_len == max(map(len, rendered))
    for i, row in enumerate(rendered):
        assert b.input_ids[i, b.prompt_len - len(row) : b.prompt_len].tolist() == row
        assert b.attention_mask[i, : b.prompt_len].sum().item() == len(row)
    two, five, eos, pad = tok.convert_tokens_to_ids("2"), tok.convert_tokens_to_ids("5"), tok.eos_token_id, tok.pad_token_id
    assert b.completion_ids.tolist() == [[two, eos, pad], [two, five, eos]]
    assert b.completion_mask.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    assert b.completion_mask.dtype == torch.float32


def test_a_batchs_rows_and_device_keep_every_field():
    b = join([[1, 2], [3], [4, 5]], torch.tensor([[6], [7], [8]]), torch.ones(3, 1), pad_id=0)
    part = b.rows(slice(1, 3))
    assert part.prompt_len == b.prompt_len
    for name in ("input_ids", "attention_mask", "position_ids", "completion_ids", "completion_mask"):
        assert torch.equal(getattr(part, name), getattr(b, name)[1:3]), name
    moved = b.to("cpu")
    assert isinstance(moved, Batch) and moved.prompt_len == b.prompt_len
    assert all(torch.equal(getattr(moved, n), getattr(b, n)) for n in ("input_ids", "completion_mask", "position_ids"))


def test_the_logit_at_p_plus_t_minus_1_scores_completion_token_t():
    """completion_logits is the full forward's logits shifted by one; the head on completion_hidden gives them too."""
    model, tok = tiny_qwen3_student(seed=0)
    model.eval()
    b = join_texts(tok, ["1+1=", "22+3="], ["2", "25"])
    full = model(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids).logits
    logits = completion_logits(model, b)
    t = b.completion_ids.shape[1]
    assert logits.shape == (2, t, len(tok)) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, full[:, b.prompt_len - 1 : b.prompt_len - 1 + t].float())
    hidden = completion_hidden(model, b)
    assert hidden.shape == (2, t, model.config.hidden_size)
    torch.testing.assert_close(model.get_output_embeddings()(hidden), logits, rtol=1e-5, atol=1e-5)


def test_token_logprobs_by_hand():
    probs = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]])  # (1, 2, 3): T != V, rows not symmetric
    lp = token_logprobs(torch.log(probs) + 1.5, torch.tensor([[1, 2]]))  # a shift per position changes nothing
    assert lp.shape == (1, 2)
    assert lp[0].tolist() == pytest.approx([math.log(0.3), math.log(0.3)], rel=1e-5)
    lp = token_logprobs(torch.log(probs), torch.tensor([[0, 1]]))
    assert lp[0].tolist() == pytest.approx([math.log(0.5), math.log(0.6)], rel=1e-5)


def test_completions_get_no_special_tokens_from_a_tokenizer_that_adds_them():
    """A tokenizer whose post-processor adds a BOS (Llama's does) must not put one inside a completion."""
    from tokenizers import processors

    tok = char_tokenizer()
    bos = tok.convert_tokens_to_ids("<|endoftext|>")
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)])
    assert tok("1")["input_ids"][0] == bos  # the processor is live
    assert encode_completions(tok, ["1"]) == [[tok.convert_tokens_to_ids("1"), tok.eos_token_id]]


def test_join_texts_renders_without_thinking_unless_told():
    """With a template that honours enable_thinking (Qwen3-style), the default is the non-thinking prompt."""
    from s2d_bench.models.qwen_bpe import CHAT_TEMPLATE

    tok = char_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    think = "<think>\n\n</think>\n\n"
    default, on = join_texts(tok, ["1+1="], ["2"]), join_texts(tok, ["1+1="], ["2"], thinking=True)
    assert tok.decode(default.input_ids[0, : default.prompt_len]).endswith("assistant\n" + think)
    assert not tok.decode(on.input_ids[0, : on.prompt_len]).endswith(think)


def test_prompt_runs_are_consecutive_rows_with_the_same_prompt_ids_and_padding():
    completions, mask = torch.arange(12).view(6, 2), torch.ones(6, 2)  # every completion its own: runs are the prompts'
    b = join([[5, 6], [5, 6], [7], [7], [7], [5, 6]], completions, mask, pad_id=0)
    assert prompt_runs(b) == [2, 3, 1]  # the last row's prompt came before, but not just before: a run of its own
    b = join([[0, 5], [5], [5]], completions[:3], mask[:3], pad_id=0)  # same ids (pad 0), other padding
    assert prompt_runs(b) == [1, 2]


def test_expand_runs_repeats_each_row_its_runs_times_in_order():
    x = torch.tensor([[1.0], [2.0], [3.0]])
    assert expand_runs(x, [2, 2, 2]).flatten().tolist() == [1, 1, 2, 2, 3, 3]
    assert expand_runs(x, [1, 3, 2]).flatten().tolist() == [1, 2, 2, 2, 3, 3]
    wide = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # rows of more than one value stay rows
    assert expand_runs(wide, [2, 2]).tolist() == [[1, 2], [1, 2], [3, 4], [3, 4]]
    assert expand_runs(wide[:1], [3]).tolist() == [[1, 2]] * 3  # one run
    x.requires_grad_(True)
    expand_runs(x, [1, 3, 2]).mul(torch.arange(6.0)[:, None]).sum().backward()
    assert x.grad.flatten().tolist() == [0, 1 + 2 + 3, 4 + 5]  # each row's gradient sums its run's


@pytest.mark.parametrize("rows", [slice(0, 9), slice(1, 8), slice(2, 8)], ids=["whole runs", "runs cut by a micro-batch", "a run of one first"])
def test_shared_prompts_give_the_one_forward_hidden_states_and_gradients(rows):
    """Each prompt's positions once (GRPO's k samples), its keys and values broadcast: the same hidden states and
    parameter gradients as one forward over every row, left padding and completions that end early included."""
    model, _ = tiny_qwen3_student(seed=0)
    model = model.double()  # float64 (RMS norms still run in float32): a wrong broadcast is far above the rounding
    model.config.use_cache = False  # as checkpoints saved from training often say: the prompt's cache is asked for anyway
    prompts = [[5, 6, 7, 8, 9], [3, 4], [7, 7, 7, 7, 7, 7]]
    completions = torch.randint(3, 30, (9, 6), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(6)[None, :] < torch.tensor([6, 1, 4, 2, 6, 3, 5, 1, 6])[:, None]).float()
    b = join([p for p in prompts for _ in range(3)], completions, mask, pad_id=0).rows(rows)
    weight = torch.randn(*b.completion_ids.shape, model.config.hidden_size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    calls = decoder_rows(model)
    out = {}
    for share in (False, True):
        hidden = completion_hidden(model, b, share_prompts=share)
        loss = (hidden * weight * b.completion_mask[..., None]).sum()
        out[share] = (hidden, torch.autograd.grad(loss, list(model.parameters())))
    runs = prompt_runs(b)
    assert calls == [len(b.input_ids), len(runs), len(b.input_ids)]  # one forward; then each prompt once, every completion
    calls.clear()
    completion_hidden(model, b)
    assert calls == [len(b.input_ids)]  # unasked, one forward (the distillation stages, whose prompts are each their own)
    keep = b.completion_mask.bool()
    torch.testing.assert_close(out[True][0][keep], out[False][0][keep], rtol=1e-6, atol=1e-9)
    for shared, one in zip(out[True][1], out[False][1]):  # to the tensor's scale: single elements can be sums that cancel
        assert float((shared - one).abs().max()) <= 1e-5 * float(one.abs().max())


def test_shared_prompts_step_aside_under_activation_checkpointing():
    """Checkpointing recomputes a layer in backward, which would append to the prompt's cache a second time."""
    from s2d_bench.models.checkpointing import checkpointing

    model, tok = tiny_qwen3_student(seed=0)
    b = join_texts(tok, ["1+1=", "1+1="], ["2", "3"])
    calls = decoder_rows(model)
    with checkpointing(model, True):
        completion_hidden(model, b, share_prompts=True).sum().backward()
    assert calls == [2]
