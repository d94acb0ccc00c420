"""Which logit scores which completion token, decided once (models/sequences.py): every helper by hand."""

import math

import pytest
import torch

from s2d_bench.generation.protocol import render
from s2d_bench.models.builders import tiny_qwen3_student
from s2d_bench.models.sequences import (
    Batch, completion_hidden, completion_logits, encode_completions, join, join_texts, left_pad, positions, token_logprobs,
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
