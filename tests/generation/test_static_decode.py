"""The compiled decode step (static_decode.py, engine hf-compiled) draws the eager sampler's tokens."""

import pytest
import torch

from s2d_bench.generation import ENGINES
from s2d_bench.generation.engine import EngineConfig
from s2d_bench.generation.hf import HFEngine
from s2d_bench.generation.protocol import prompt_seeds, render
from s2d_bench.generation.sampling import Sampling, sample
from s2d_bench.generation.static_decode import BUCKET, CACHE, STEP, SYNC_EVERY, cache_length, sample_static
from s2d_bench.models import MODELS
from s2d_bench.models.sequences import left_pad

PROMPTS = ["1+1=", "123+456=", "7", "55+5=", "9+99="]  # different lengths: left padding in every batch


@pytest.mark.parametrize("s", [Sampling(k=3, temperature=1.0, max_new_tokens=20), Sampling(k=2, temperature=0.7, top_p=0.9, top_k=5, max_new_tokens=20),
                               Sampling(k=1, temperature=0.0, max_new_tokens=9)], ids=["t1", "top-p-top-k", "greedy"])
def test_the_static_loop_draws_the_eager_loops_tokens(s):
    """The static-shape loop run eagerly: the prompt cache repeated k times instead of shared, no eviction, every row
    decoding until all stop; each prompt's generator still draws k uniforms a step, so every token is the eager loop's."""
    model, tok = MODELS.get("tiny-qwen3-student")(seed=0)
    ids, mask = left_pad(render(tok, PROMPTS, False), tok.pad_token_id)
    seeds = prompt_seeds(3, len(PROMPTS))
    want, want_mask = sample(model, ids, mask, s, tok.eos_token_id, tok.pad_token_id, seeds, len(tok))
    got, got_mask = sample_static(model, ids, mask, s, tok.eos_token_id, tok.pad_token_id, seeds, len(tok), compiled=False)
    assert torch.equal(got, want) and torch.equal(got_mask, want_mask)
    assert STEP not in model.__dict__ and CACHE not in model.__dict__  # run eagerly: nothing compiled, no cache kept
    if s.temperature > 0:
        lengths = want_mask.sum(1)
        assert lengths.min() < lengths.max() == want.shape[1]  # some rows stopped early (EOS), others ran on


def test_the_loop_ends_with_its_last_row_and_looks_every_sync_every_steps(monkeypatch):
    """Every row stops early (half the vocabulary ends a reply): the result is as wide as the eager loop's, up to the
    step where the last row stopped, and the loop ran at most SYNC_EVERY decode steps past it (the host looks then)."""
    model, tok = MODELS.get("tiny-qwen3-student")(seed=0)
    ids, mask = left_pad(render(tok, PROMPTS, False), tok.pad_token_id)
    stops, s, seeds = list(range(0, len(tok), 2)), Sampling(k=3, temperature=1.0, max_new_tokens=80), prompt_seeds(2, len(PROMPTS))
    want, want_mask = sample(model, ids, mask, s, stops, tok.pad_token_id, seeds, len(tok))
    calls, forward = [], model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **kw: calls.append(1) or forward(*a, **kw))
    got, got_mask = sample_static(model, ids, mask, s, stops, tok.pad_token_id, seeds, len(tok), compiled=False)
    assert torch.equal(got, want) and torch.equal(got_mask, want_mask)
    last = want.shape[1]  # the step (1-based) where the last row stopped
    assert 1 < last < s.max_new_tokens - SYNC_EVERY and want_mask.sum(1).min() < last
    assert last - 1 <= len(calls) - 1 <= last - 1 + SYNC_EVERY  # decode forwards (the prefill is the first call)


def test_cache_lengths_round_up_to_a_bucket_that_holds_prompt_and_completion():
    assert cache_length(10, 20) == BUCKET and cache_length(BUCKET - 20, 20) == BUCKET and cache_length(BUCKET - 19, 20) == 2 * BUCKET


@pytest.mark.parametrize("builder", ["tiny-qwen3-student", "tiny-qwen3-bpe-151936"], ids=["tiny", "qwen-vocabulary"])
def test_the_compiled_engine_draws_the_hf_engines_tokens(builder):
    """hf-compiled against hf through the engine interface: the same completions for the same seeds, with the real
    151,936-row Qwen vocabulary too; a second call reuses the compiled step and its cache (emptied) to the same tokens."""
    model, tok = MODELS.get(builder)(seed=0)
    s = Sampling(k=2, temperature=1.0, max_new_tokens=12)
    seeds = prompt_seeds(1, len(PROMPTS))
    cfg = EngineConfig(prompts_per_batch=0)
    want = [c.ids for c in HFEngine(model, tok, cfg).generate(PROMPTS, s, seeds)]
    compiled = ENGINES.get("hf-compiled")(model, tok, cfg)
    assert [c.ids for c in compiled.generate(PROMPTS, s, seeds)] == want
    step, (shape, cache) = model.__dict__[STEP], model.__dict__[CACHE]  # compiled, and its cache kept on the model
    assert [c.ids for c in compiled.generate(PROMPTS, s, seeds)] == want
    assert model.__dict__[STEP] is step and model.__dict__[CACHE][1] is cache  # reused, not rebuilt
    assert len({tuple(ids) for ids in want}) == len(want)  # random weights: every sample differs
    if builder == "tiny-qwen3-student":  # fewer rows: another cache (and step) shape for the same model
        few = [c.ids for c in HFEngine(model, tok, cfg).generate(PROMPTS[:2], s, seeds[:2])]
        assert [c.ids for c in compiled.generate(PROMPTS[:2], s, seeds[:2])] == few
        assert model.__dict__[CACHE][0] == (2 * s.k, shape[1]) != shape
