"""One prompt and stop protocol: every path that samples feeds the model the same prompt ids and stops
at the same tokens.

The tokenizer here has a chat template that, like Qwen3's, turns thinking *on* when
`enable_thinking` is absent and writes an empty think block when it is false, and a generation
config that ends turns with two tokens (Qwen3: `<|im_end|>` and `<|endoftext|>`). A path that
forgot the flag would feed thinking-mode prompts; one that stopped at the tokenizer's EOS alone
would miss a stop token. Each path is spied on where the ids enter the model.
"""

import pytest
import torch

from conftest import QWEN3_LIKE

from s2d_bench import diagnostics
from s2d_bench.backends import BACKENDS
from s2d_bench.config import EvalConfig, TaskConfig, load_config
from s2d_bench.generation import hf as hf_module
from s2d_bench.generation.engine import EngineConfig
from s2d_bench.generation.hf import HFEngine
from s2d_bench.generation.protocol import render, stop_ids
from s2d_bench.generation.sampling import Sampling
from s2d_bench.harness.evaluate import evaluate
from s2d_bench.harness.rewards import Scores
from s2d_bench.models.builders import tiny_qwen3_student
from s2d_bench.stages import STAGES, StageInputs
from s2d_bench.tasks import TASKS

STEPS = ["stages.teacher_rl.steps=1", "stages.teacher_rl.prompts_per_step=2", "stages.teacher_rl.samples_per_prompt=2",
         "stages.opd.steps=1", "stages.opd.batch_size=2", "stages.warmup.steps=1", "stages.warmup.batch_size=2",
         "stages.teacher_rl.max_new_tokens=4", "stages.opd.max_new_tokens=4", "stages.warmup.max_new_tokens=4"]


def _models():
    student, tok = tiny_qwen3_student(seed=0)
    teacher, _ = tiny_qwen3_student(seed=1)
    tok.chat_template = QWEN3_LIKE
    two_stops = [tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")]
    for m in (student, teacher):
        m.generation_config.eos_token_id = two_stops
    return student, teacher, tok


@pytest.fixture
def world():
    splits = TASKS.get("add3mix")(TaskConfig(n_labeled=8, n_unlabeled=16, n_test=4)).splits()
    student, teacher, tok = _models()
    prompts = [p.prompt for p in splits.labeled + splits.unlabeled + splits.test]
    return splits, student, teacher, tok, {tuple(r) for r in render(tok, prompts, thinking=False)}


@pytest.fixture
def seen(monkeypatch):
    """(prompt rows, stop set) of every call into the built-in sampler."""
    calls: list[tuple[list[list[int]], list[int]]] = []
    real = hf_module.sample

    def spy(model, ids, mask, s, eos, pad, seeds, vocab=None):  # noqa: ANN001
        calls.append(([row[m.bool()].tolist() for row, m in zip(ids, mask)], sorted(eos if isinstance(eos, list) else [eos])))
        return real(model, ids, mask, s, eos, pad, seeds, vocab)

    monkeypatch.setattr(hf_module.HFEngine, "decode", staticmethod(spy))
    return calls


def _spy_generate(model, calls):
    """TRL samples with `model.generate`: record its unpadded prompt rows and its stop set."""
    real = model.generate

    def generate(*args, **kwargs):
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        eos = kwargs["generation_config"].eos_token_id
        calls.append(([row[m.bool()].tolist() for row, m in zip(ids, mask)], sorted(eos if isinstance(eos, list) else [eos])))
        return real(*args, **kwargs)

    model.generate = generate


def _check(calls, expected_rows, stops):
    assert calls, "nothing was sampled"
    for rows, stop in calls:
        assert rows and all(tuple(r) in expected_rows for r in rows), "a prompt was rendered another way"
        assert stop == stops


def test_the_template_would_think_without_the_flag():
    _, _, tok = _models()
    thinking, plain = render(tok, ["1+1="], True)[0], render(tok, ["1+1="], False)[0]
    assert tok.decode(plain).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert thinking != plain
    assert tok.apply_chat_template([{"role": "user", "content": "1+1="}], tokenize=False, add_generation_prompt=True) == tok.decode(thinking)
    assert render(tok, [], True) == []  # no prompts, no rows (a fast tokenizer's batch call refuses [])


@pytest.mark.parametrize("backend", ["torch", "deepspeed", "trl"])
def test_training_rollouts_of_every_backend_render_and_stop_as_evaluation_does(backend, world, seen):
    pytest.importorskip(backend if backend != "torch" else "torch")
    splits, student, teacher, tok, expected = world
    cfg = load_config(None, STEPS)
    runner = BACKENDS.get(backend)(cfg)
    trl_calls: list = []
    if backend == "trl":
        _spy_generate(teacher, trl_calls)
        _spy_generate(student, trl_calls)
    reward = lambda texts, problems: Scores([float(len(t) % 2) for t in texts])  # noqa: E731
    for stage, model in (("teacher_rl", teacher), ("warmup", student), ("opd", student)):
        STAGES.get(stage).run(StageInputs(runner, model, teacher, tok, splits, reward, getattr(cfg.stages, stage), 0, lambda row: None))
    stops = stop_ids(student, tok)
    assert len(stops) == 2
    _check(seen + trl_calls, expected, stops)
    if backend == "trl":
        assert len(trl_calls) == 2 and len(seen) == 1  # GRPO and OPD sample inside TRL, the warmup's teacher with our engine


def test_evaluation_and_the_c2_diagnostics_render_and_stop_the_same_way(world, seen):
    splits, student, teacher, tok, expected = world
    evaluate(HFEngine(student, tok), splits.test, EvalConfig(samples=2, max_new_tokens=4), 0, "exact")
    diagnostics.kl_both_ways(teacher, student, tok, [p.prompt for p in splits.test], 4, 0, thinking=False)
    assert len(seen) == 3
    _check(seen, expected, stop_ids(student, tok))


def test_thinking_true_reaches_every_prompt(world, seen):
    splits, student, _, tok, expected = world
    prompts = [p.prompt for p in splits.test]
    HFEngine(student, tok, EngineConfig(thinking=True)).generate(prompts, Sampling(k=1, max_new_tokens=2), [0] * len(prompts))
    (rows, _), = seen
    assert rows == render(tok, [p.prompt for p in splits.test], thinking=True)
    assert not any(tuple(r) in expected for r in rows)


def test_a_prompt_past_the_context_is_refused_before_sampling_with_its_fix(monkeypatch):
    """check_context's bounds, each with the numbers a user needs: prompt + max_new_tokens may fill the context exactly; a
    prompt that alone fills it is refused as not fitting; a prompt longer than context x the longest token string is refused
    by its characters without being tokenized, and one of exactly that length is still tokenized."""
    import re
    from types import SimpleNamespace

    from s2d_bench.errors import UserError
    from s2d_bench.generation import protocol

    _, tok = tiny_qwen3_student()
    size = len(render(tok, ["1+2="], False)[0])
    check = lambda context, new, prompt="1+2=": protocol.check_context(tok, [prompt], ["p7"], False, context, new)  # noqa: E731
    check(size + 5, 5)  # fills the context exactly
    check(size + 1, 0)
    check(None, 10**6)  # no context known: nothing to check
    check(0, 10**6)
    with pytest.raises(UserError, match=re.escape(f"problem p7: prompt ({size:,} tokens) + max_new_tokens (6) exceed the model's "
                                                  f"context of {size + 5:,} tokens; lower max_new_tokens to 5 or less")):
        check(size + 5, 6)
    with pytest.raises(UserError, match=re.escape(f"problem p7: its prompt ({size:,} tokens) does not fit the model's context of "
                                                  f"{size:,} tokens; remove it from the data (or use a model with a longer context)")):
        check(size, 0)
    longest = max(map(len, tok.get_vocab()))
    assert longest > 1
    template = size - 4  # the tokens the chat template adds around a prompt (this tokenizer: one a character)
    with pytest.raises(UserError, match=re.escape(f"its prompt ({4 * longest + template:,} tokens) does not fit")):  # at the bound: tokenized
        check(4, 0, "7" * (4 * longest))
    rendered = []
    monkeypatch.setattr(protocol, "render", lambda *a: rendered.append(a) or [[0]])
    with pytest.raises(UserError, match=re.escape(f"its prompt ({4 * longest + 1:,} characters) does not fit the model's context of 4 tokens")):
        check(4, 0, "7" * (4 * longest + 1))
    assert rendered == []  # never tokenized

    assert protocol.context_of(SimpleNamespace(max_position_embeddings=77)) == 77
    assert protocol.context_of(SimpleNamespace(vocab_size=5)) is None


def test_a_prompt_is_its_template_alone_and_a_grader_never_reads_the_stop_token():
    """Templates write their own special tokens (Llama's `<|begin_of_text|>`): a tokenizer that adds one more on encoding
    (here a post-processor prepending a token) must not get to, and decoding drops the stop token the reply ended with."""
    from tokenizers.processors import TemplateProcessing

    from s2d_bench.generation.protocol import completion_texts, render_texts

    _, _, tok = _models()
    tok._tokenizer.post_processor = TemplateProcessing(single=f"{tok.eos_token} $A", special_tokens=[(tok.eos_token, tok.eos_token_id)])
    (text,) = render_texts(tok, ["1+2"], False)
    assert text.startswith("<|im_start|>user\n1+2<|im_end|>") and text.endswith("</think>\n\n")
    (ids,) = render(tok, ["1+2"], False)
    assert ids == tok(text, add_special_tokens=False)["input_ids"] and tok(text)["input_ids"] == [tok.eos_token_id, *ids]
    reply = tok("42", add_special_tokens=False)["input_ids"]
    assert completion_texts(tok, [[*reply, tok.eos_token_id], reply]) == ["42", "42"]


def test_the_stop_set_is_the_generation_configs_eos_ids_and_the_tokenizers():
    from transformers import GenerationConfig

    from s2d_bench.generation.protocol import stop_ids_of

    _, _, tok = _models()
    eos, other = tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")
    assert stop_ids_of(None, tok) == [eos]  # an engine without a generation config: the tokenizer's EOS
    assert stop_ids_of(GenerationConfig(), tok) == [eos]
    assert stop_ids_of(GenerationConfig(eos_token_id=other), tok) == sorted({eos, other})  # one id, not a list
    assert stop_ids_of(GenerationConfig(eos_token_id=[other, 40, eos]), tok) == sorted({eos, other, 40})


def test_prompt_seeds_and_step_draws_are_the_ones_earlier_runs_drew():
    """Every stage's prompts and sampling seeds come from here: a change would silently resample every run's stages (node
    ids, which name the trained weights, would not notice)."""
    import random

    from s2d_bench.generation.protocol import draw_step, prompt_seeds

    assert prompt_seeds(0, 3) == [6956993988634818902, 3373202220108974583, 8501781468137428041]
    assert all(0 <= s < 2**63 for s in prompt_seeds(7, 100)) and len(set(prompt_seeds(7, 100))) == 100
    assert draw_step(random.Random(0), list(range(10)), 3) == ([6, 9, 0], [199397271131000043, 2284932007262676052, 2141479890809876938])
    picked, seeds = draw_step(random.Random(0), list(range(2)), 3)  # fewer items than asked: all of them, once each
    assert sorted(picked) == [0, 1] and len(seeds) == 2


def test_peeking_at_the_next_step_draws_what_it_will_draw_and_moves_nothing():
    """A helper process samples step t + 1's rollouts while step t trains: the peek must be that step's draw exactly, and
    leave the stage's random stream (which its checkpoints save) where it was."""
    import random

    from s2d_bench.generation.protocol import draw_step, peek_draw

    items = list(range(20))
    rng = random.Random(5)
    draw_step(rng, items, 4)  # a stage some steps in
    for n in (4, 30):  # a step's batch, and more than there are items
        before = rng.getstate()
        ahead = peek_draw(rng, items, n)
        assert rng.getstate() == before
        assert ahead == draw_step(rng, items, n) and len(ahead[0]) == min(n, 20)


def test_engine_settings_devices_and_dtypes_are_checked_with_the_fix_named():
    """What a user mistypes in `eval:`/`rollout:` (or asks of a machine without a GPU) fails at once, saying what to use."""
    from s2d_bench.errors import UserError
    from s2d_bench.generation.engine import EngineConfig, resolve_device, resolve_dtype

    EngineConfig(dtype="bfloat16", prompts_per_batch=0, max_batch_tokens=0)  # 0: every prompt at once, no bound
    for bad, line in [({"dtype": "fp8"}, "dtype fp8: use auto, float32, bfloat16, float16"),
                      ({"prompts_per_batch": -1}, "prompts_per_batch must be >= 0 (0: every prompt in one batch)"),
                      ({"max_batch_tokens": -1}, "max_batch_tokens must be >= 0 (0: no bound)")]:
        with pytest.raises(UserError) as refusal:
            EngineConfig(**bad)
        assert str(refusal.value) == line
    assert not torch.cuda.is_available()  # this machine: the GPU branches are a GPU run's to test
    assert resolve_device("auto") == resolve_device("cpu") == "cpu"
    for name in ("cuda", "cuda:1"):
        with pytest.raises(UserError) as refusal:
            resolve_device(name)
        assert str(refusal.value) == f"device={name} but torch sees no GPU: use device=cpu (or auto)"
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("bfloat16", "cpu") == torch.bfloat16


def test_auto_device_is_cuda_where_torch_sees_a_gpu(monkeypatch):
    from s2d_bench.generation.engine import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what torch answers on a GPU machine
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1" and resolve_device("cpu") == "cpu"


@pytest.mark.parametrize("bf16", [True, False], ids=["gpu-with-bf16", "gpu-without"])
def test_auto_dtype_is_bf16_only_on_a_cuda_gpu_that_supports_it(bf16, monkeypatch):
    from s2d_bench.generation.engine import resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)  # the GPU asked about, as a GPU would answer
    assert resolve_dtype("auto", "cuda:1") == (torch.bfloat16 if bf16 else torch.float32)
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("float16", "cuda") == torch.float16


def test_an_evaluation_engine_loads_the_model_in_the_dtype_and_with_the_settings_asked(tmp_path):
    from s2d_bench.generation.engine import EngineConfig
    from s2d_bench.generation.hf import HFEngine
    from s2d_bench.models.builders import tiny_qwen3_student

    model, tok = tiny_qwen3_student(seed=0)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cfg = EngineConfig(device="cpu", dtype="bfloat16", prompts_per_batch=3, thinking=True)
    engine = HFEngine.load(str(tmp_path), cfg)
    assert engine.cfg == cfg and engine.model.dtype == torch.bfloat16 and engine.model.device.type == "cpu"
    assert all(torch.equal(a.bfloat16(), b) for a, b in zip(model.state_dict().values(), engine.model.state_dict().values()))
    from s2d_bench.generation.sampling import Sampling  # and it samples in that dtype (shared-prefix attention included)

    assert len(engine.generate(["12+30=", "7+8="], Sampling(k=2, temperature=1.0, max_new_tokens=4), [0, 1])) == 4


def test_a_stages_engine_follows_its_model_and_is_closed_when_its_block_ends_or_fails(monkeypatch):
    from s2d_bench.config import RolloutConfig
    from s2d_bench.generation.engine import open_rollouts

    closed = []
    monkeypatch.setattr(HFEngine, "close", lambda self: closed.append(self))
    student, _, tok = _models()
    with open_rollouts(RolloutConfig(prompts_per_batch=3), student, tok, True, trained=True) as engine:
        assert isinstance(engine, HFEngine) and engine.model is student and engine.cfg.thinking and engine.cfg.prompts_per_batch == 3
    with pytest.raises(KeyError), open_rollouts(RolloutConfig(), student, tok, False, trained=False):
        raise KeyError("a stage failed")
    assert len(closed) == 2
