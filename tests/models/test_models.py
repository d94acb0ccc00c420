import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from s2d_bench.errors import UserError
from s2d_bench.models import MODELS
from s2d_bench.models.builders import check_pair, load_pretrained, save
from s2d_bench.generation.protocol import render
from s2d_bench.models.sequences import join_texts
from s2d_bench.models.tokenizer import char_tokenizer


def test_char_tokenizer_round_trips_chat_prompts_and_has_one_token_per_char():
    tok = char_tokenizer()
    (ids,) = render(tok, ["007+385="], False)
    text = tok.decode(ids)
    assert text == "<|im_start|>user\n007+385=<|im_end|>\n<|im_start|>assistant\n"
    assert len(tok("\\boxed{0392}", add_special_tokens=False)["input_ids"]) == len("\\boxed{0392}")


def test_teacher_is_larger_than_student_and_both_share_the_vocabulary():
    teacher, t_tok = MODELS.get("tiny-qwen3-teacher")()
    student, s_tok = MODELS.get("tiny-qwen3-student")()
    assert teacher.num_parameters() > 4 * student.num_parameters()
    check_pair(t_tok, s_tok)  # does not raise


def test_saved_model_is_an_ordinary_hf_directory(tmp_path):
    model, tok = MODELS.get("tiny-qwen3-student")()
    save(model, tok, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    tok2 = AutoTokenizer.from_pretrained(tmp_path / "m")
    batch = join_texts(tok2, ["1+2="], ["\\boxed{0003}"])
    with torch.no_grad():
        a = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        b = again(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert torch.equal(a, b)
    assert tok2.chat_template == tok.chat_template


def test_pair_with_different_vocabularies_is_refused():
    tok = char_tokenizer()
    other = char_tokenizer()
    other.add_tokens(["<extra>"])
    with pytest.raises(UserError, match="different vocabularies"):
        check_pair(tok, other)


def test_missing_local_model_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_pretrained(str(tmp_path / "nope"))

