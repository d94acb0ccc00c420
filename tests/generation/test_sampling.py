"""The built-in sampler: exact greedy decoding, per-prompt seeds, top-p, shared-prefix decoding."""

import contextlib

import pytest
import torch
from conftest import QWEN3_LIKE

from s2d_bench.config import RolloutConfig
from s2d_bench.generation import sampling as sampling_module
from s2d_bench.generation.engine import EngineConfig
from s2d_bench.generation.hf import HFEngine
from s2d_bench.generation.protocol import prompt_seeds, render
from s2d_bench.generation.sampling import Sampling, UniformStream, generators, next_token, sample
from s2d_bench.models import MODELS
from s2d_bench.models.sequences import left_pad


def rollouts(model, tok, prompts, s, seed, per_batch=0):
    return HFEngine(model, tok, EngineConfig(prompts_per_batch=per_batch)).rollouts(prompts, s, prompt_seeds(seed, len(prompts)))


def encode_prompts(tok, prompts):
    return render(tok, prompts, False)


def _decode_batches(monkeypatch) -> list[tuple[int, int]]:
    """The (prompts, prompt length) of every batch the hf engine's decode loop is handed, as they are sampled."""
    shapes: list[tuple[int, int]] = []

    def counting(model, ids, mask, *args):
        shapes.append(tuple(ids.shape))
        return sample(model, ids, mask, *args)

    monkeypatch.setattr(HFEngine, "decode", staticmethod(counting))
    return shapes


@pytest.mark.parametrize("shared", [True, False], ids=["shared-prefix", "repeated-cache"])
def test_greedy_cached_sampling_matches_transformers_generate_with_left_padding(monkeypatch, shared):
    """Both decode paths: the shared-prefix cache, and the prompt cache repeated k times with its attention mask grown a
    column a step (the path of models without our attention)."""
    if not shared:
        monkeypatch.setattr(sampling_module, "sharing_prompts", lambda m: contextlib.nullcontext())
    model, tok = MODELS.get("tiny-qwen3-teacher")(seed=3)
    prompts = ["1+2=", "123+456=", "99+1="]  # different lengths: left padding is exercised
    roll = rollouts(model, tok, prompts, Sampling(k=2, top_k=1, max_new_tokens=12), seed=0)
    ids, mask = left_pad(encode_prompts(tok, prompts), tok.pad_token_id)
    ref = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12, min_new_tokens=12, eos_token_id=None, pad_token_id=tok.pad_token_id)
    expected = ref[:, ids.shape[1] :]
    got = roll.batch.completion_ids
    for i in range(len(prompts)):
        for j in range(2):
            row, m = got[i * 2 + j], roll.batch.completion_mask[i * 2 + j].bool()
            assert torch.equal(row[m], expected[i, : int(m.sum())])


def test_k_samples_per_prompt_end_at_eos_and_are_reproducible():
    model, tok = MODELS.get("tiny-qwen3-student")(seed=0)
    s = Sampling(k=4, temperature=1.0, max_new_tokens=10)
    a = rollouts(model, tok, ["1+1=", "2+2="], s, seed=7)
    b = rollouts(model, tok, ["1+1=", "2+2="], s, seed=7)
    assert len(a.texts) == 8 and torch.equal(a.batch.completion_ids, b.batch.completion_ids)
    ids, mask = a.batch.completion_ids, a.batch.completion_mask
    for row, m in zip(ids, mask):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()  # the mask is a prefix
        assert (row[n:] == tok.pad_token_id).all()
        if n < ids.shape[1]:
            assert row[n - 1] == tok.eos_token_id  # a row stops only at EOS


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.tensor([[2.0, 1.0, 0.0, -5.0]]).repeat(300, 1)  # probabilities 0.665, 0.245, 0.090, 0.0006
    uniforms = torch.rand(300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def draws(top_p: float) -> set[int]:
        return set(next_token(logits, Sampling(top_p=top_p), uniforms).tolist())

    assert draws(0.6) == {0}  # 0.665 >= 0.6 already
    assert draws(0.8) == {0, 1}  # 0.665 < 0.8 <= 0.910
    assert {0, 1, 2} <= draws(1.0)


def test_inverse_cdf_draws_follow_the_distribution_and_never_take_an_impossible_token():
    """The sampler's draw (one uniform a row, inverse CDF) has the multinomial's distribution."""
    probs = torch.tensor([0.5, 0.0, 0.3, 0.15, 0.05, 0.0])
    n = 200_000
    uniforms = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tokens = next_token(probs.log().expand(n, -1), Sampling(), uniforms)
    freq = torch.bincount(tokens, minlength=6).double() / n
    assert freq[1] == 0 and freq[5] == 0
    torch.testing.assert_close(freq, probs.double(), rtol=0, atol=4 * (0.25 / n) ** 0.5)  # 4 standard errors at most
    edge = next_token(probs.log()[None], Sampling(), torch.tensor([1.0 - 1e-16], dtype=torch.float64))
    assert int(edge) == 4  # the largest uniform still lands on the last possible token, not a zero-mass one


def test_temperature_top_k_greedy_and_the_ends_of_the_cdf_by_hand():
    """Temperature divides the logits (T = 0.5 squares and renormalises the probabilities); top-k keeps exactly the k
    most likely tokens even for one row; greedy is each row's argmax; a uniform of 0 never takes a zero-mass first
    token; the last token of the vocabulary can be drawn."""
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    n = 100_000
    uniforms = torch.rand(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    tokens = next_token(probs.log().expand(n, -1), Sampling(temperature=0.5), uniforms)
    sharpened = probs.double() ** 2 / (probs.double() ** 2).sum()
    torch.testing.assert_close(torch.bincount(tokens, minlength=4).double() / n, sharpened, rtol=0, atol=4 * (0.25 / n) ** 0.5)
    one_row = {int(next_token(probs.log()[None], Sampling(top_k=3), u[None])) for u in uniforms[:300]}
    assert one_row == {1, 2, 3}
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0], [0.0, 1.0, 5.0]])
    assert next_token(logits, Sampling(temperature=0.0), None).tolist() == [1, 0, 2]
    zero_first = torch.tensor([[0.0, 0.5, 0.5]]).log()
    assert int(next_token(zero_first, Sampling(), torch.tensor([0.0], dtype=torch.float64))) == 1
    assert int(next_token(probs.log()[None], Sampling(), torch.tensor([0.99], dtype=torch.float64))) == 3


def test_a_prompts_samples_depend_on_its_seed_alone_not_on_its_batch():
    """Per-prompt seeds: the batch a prompt shares (its size, its order, its split) changes no token."""
    model, tok = MODELS.get("tiny-qwen3-teacher")(seed=5)  # random weights: long, varied completions
    prompts = ["1+1=", "123+456=", "7", "55+5=", "9+99="]
    s = Sampling(k=3, temperature=1.0, max_new_tokens=12)
    seeds = prompt_seeds(4, len(prompts))
    engine = lambda per_batch: HFEngine(model, tok, EngineConfig(prompts_per_batch=per_batch))  # noqa: E731
    whole = [c.ids for c in engine(0).generate(prompts, s, seeds)]
    assert [c.ids for c in engine(2).generate(prompts, s, seeds)] == whole
    alone = [c.ids for i in range(len(prompts)) for c in engine(1).generate([prompts[i]], s, [seeds[i]])]
    assert alone == whole
    assert len({tuple(ids) for ids in whole}) > len(prompts)  # the samples of a prompt differ
    other = [c.ids for c in engine(0).generate(prompts, s, prompt_seeds(5, len(prompts)))]
    assert other != whole


def test_a_token_budget_bounds_every_sampling_batch_and_changes_no_token(monkeypatch):
    """rollout.max_batch_tokens: batches of at most that many KV-cache positions, k x (longest prompt +
    max_new_tokens) each (one over-budget prompt alone), with the tokens of the unbounded sampler."""
    model, tok = MODELS.get("tiny-qwen3-teacher")(seed=5)
    prompts = ["1+1=", "123+456=", "7", "55+5=", "9+99=", "31+4=", "250+250="]
    s = Sampling(k=3, temperature=1.0, max_new_tokens=12)
    seeds = prompt_seeds(4, len(prompts))
    whole = [c.ids for c in HFEngine(model, tok, EngineConfig(prompts_per_batch=0)).generate(prompts, s, seeds)]
    shapes = _decode_batches(monkeypatch)
    longest = max(len(r) for r in render(tok, prompts, False))
    budget = 2 * s.k * (longest + s.max_new_tokens)  # two of the longest prompts fit
    bounded = HFEngine(model, tok, EngineConfig(prompts_per_batch=0, max_batch_tokens=budget)).generate(prompts, s, seeds)
    assert [c.ids for c in bounded] == whole
    assert len(shapes) > 1 and all(b * s.k * (p + s.max_new_tokens) <= budget for b, p in shapes)
    shapes.clear()
    HFEngine(model, tok, EngineConfig(prompts_per_batch=0, max_batch_tokens=1)).generate(prompts, s, seeds)
    assert [b for b, _ in shapes] == [1] * len(prompts)  # over the bound: one prompt a batch, never none


@pytest.mark.parametrize("shared", [True, False], ids=["shared-prefix", "repeated-cache"])
def test_finished_prompts_leave_the_decode_batch_and_no_token_changes(monkeypatch, shared):
    """Prompts whose samples have all stopped are dropped from the decode batch (cache, mask, positions), so later
    steps run on fewer rows; the tokens and masks are those of the loop that keeps every row to the end."""
    model, tok = MODELS.get("tiny-qwen3-teacher")(seed=5)
    ids, mask = left_pad(encode_prompts(tok, ["1+1=", "123+456=", "7", "55+5=", "9+99=", "31+4=", "250+250=", "8+8="]), tok.pad_token_id)
    s = Sampling(k=2, temperature=1.0, max_new_tokens=20)
    seeds = list(range(20, 28))
    if not shared:
        monkeypatch.setattr(sampling_module, "sharing_prompts", lambda m: contextlib.nullcontext())
    monkeypatch.setattr(sampling_module, "EVICT_SHARE", float("inf"))
    endless, _ = sample(model, ids, mask, s, tok.eos_token_id, tok.pad_token_id, seeds)
    stops = sorted({int(t) for t in endless[::3, 8]})  # tokens some samples reach at step 8: others stop at other steps
    kept_ids, kept_mask = sample(model, ids, mask, s, stops, tok.pad_token_id, seeds)
    rows = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **kw: rows.append(kw["input_ids"].shape[0]) or original(*a, **kw))
    monkeypatch.setattr(sampling_module, "EVICT_SHARE", 0.25)
    got_ids, got_mask = sample(model, ids, mask, s, stops, tok.pad_token_id, seeds)
    lengths = kept_mask.sum(1)
    assert lengths.min() < lengths.max() - 3  # samples end at different steps
    assert torch.equal(got_ids, kept_ids) and torch.equal(got_mask, kept_mask)
    decode = rows[1:]  # after the prefill
    assert len(decode) > 5 and decode[-1] < 16 and decode == sorted(decode, reverse=True), decode
    alive_prompts = (kept_mask.view(8, 2, -1).amax(dim=1) > 0).sum(0)  # prompts still generating at each step
    assert all(n >= 2 * int(a) for n, a in zip(decode, alive_prompts[1:]))  # never drops one that is still generating


def test_in_kernel_gqa_attention_matches_transformers_sdpa_under_left_padding():
    from s2d_bench.models.attention import NAME
    from s2d_bench.models.builders import tiny_qwen3_teacher
    from s2d_bench.models.sequences import left_pad, positions

    model, tok = tiny_qwen3_teacher(seed=3)  # 4 query heads share 2 KV heads
    ids, mask = left_pad(encode_prompts(tok, ["1+1=", "123+456=", "7"]), tok.pad_token_id)
    model.set_attn_implementation("sdpa")
    reference = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    model.set_attn_implementation(NAME)
    fast = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    real = mask.bool()
    torch.testing.assert_close(fast[real], reference[real], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "s2d_sdpa_gqa"])
def test_shared_prefix_decoding_matches_repeated_prompt_cache(attention):
    """Shared-prefix attention reads one prompt cache for k samples; tokens must not change. The sampler
    switches a model on SDPA (transformers' or ours with grouped-query heads in the kernel) to it for the
    call only: every step reads the shared cache, and the model's own attention is back afterwards
    (training uses it)."""
    from s2d_bench.generation.shared_prefix import NAME, SharedPrefixCache
    from s2d_bench.models.builders import tiny_qwen3_teacher

    model, tok = tiny_qwen3_teacher(seed=5)  # random weights: long, varied completions
    ids, mask = left_pad(encode_prompts(tok, ["1+1=", "123+456=", "7"]), tok.pad_token_id)
    s = Sampling(k=3, temperature=1.0, max_new_tokens=24)
    seen = []

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        return sample(model, ids, mask, s, tok.eos_token_id, tok.pad_token_id, [11, 12, 13])

    model.set_attn_implementation(attention)
    original = model.forward
    model.forward = lambda *a, **kw: seen.append((model.config._attn_implementation, type(kw.get("past_key_values")))) or original(*a, **kw)
    with pytest.MonkeyPatch.context() as patch:  # the repeated-cache path as the reference
        patch.setattr(sampling_module, "sharing_prompts", lambda m: contextlib.nullcontext())
        ref_ids, ref_mask = run()
    assert {impl for impl, _ in seen} == {attention}
    seen.clear()
    got_ids, got_mask = run()
    assert {impl for impl, _ in seen} == {NAME} and model.config._attn_implementation == attention
    assert all(cache is SharedPrefixCache for _, cache in seen[1:])  # every decode step (after the prefill) reads it
    assert ref_mask.sum() > 3 * 3 * 4  # samples ran for several steps
    assert torch.equal(got_mask, ref_mask) and torch.equal(got_ids, ref_ids)
    assert len({tuple(r.tolist()) for r in got_ids}) > 3  # the k samples of a prompt differ


@pytest.mark.parametrize("scaling", ["model", None, 0.2], ids=["model-scale", "no-scale", "other-scale"])
def test_shared_prefix_attention_equals_plain_attention_for_several_new_tokens(scaling):
    """Multi-token steps over the shared cache (causal within the new tokens: 2, then 3 after those) match SDPA, at the
    scale the model's attention passes: Qwen3's head_dim ** -0.5, none (SDPA's default, the same), or another (a model
    with its own)."""
    from s2d_bench.generation.shared_prefix import KWARG, prefill, use_shared_prefix_attention
    from s2d_bench.models.builders import tiny_qwen3_teacher
    from s2d_bench.models.sequences import positions

    model, tok = tiny_qwen3_teacher(seed=2)
    model.eval()
    attentions = [m for m in model.modules() if hasattr(m, "scaling")]
    assert len(attentions) == model.config.num_hidden_layers
    for attention in attentions if scaling != "model" else []:
        attention.scaling = scaling
    ids, mask = left_pad(encode_prompts(tok, ["12+3=", "4="]), tok.pad_token_id)
    k, new = 2, torch.tensor([[5, 6, 7, 8, 9], [8, 9, 10, 11, 12], [5, 5, 5, 5, 5], [11, 12, 13, 14, 15]])
    full_ids = torch.cat([ids.repeat_interleave(k, 0), new], 1)
    full_mask = torch.cat([mask.repeat_interleave(k, 0), torch.ones_like(new)], 1)
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        ref = model(input_ids=full_ids, attention_mask=full_mask, position_ids=positions(full_mask)).logits[:, -5:]
        use_shared_prefix_attention(model)
        _, cache = prefill(model, ids, mask, k, capacity=8)
        new_pos = positions(mask)[:, -1:].repeat_interleave(k, 0) + 1 + torch.arange(5)
        got = [model(input_ids=new[:, part], position_ids=new_pos[:, part], past_key_values=cache, use_cache=True, **{KWARG: cache}).logits
               for part in (slice(0, 2), slice(2, 5))]  # a step of 2 over none generated, then of 3 over those 2
    torch.testing.assert_close(torch.cat(got, 1), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("masked", [True, False], ids=["padding-bias", "no-bias"])
def test_attention_off_the_cpu_equals_the_cpu_kernel_which_the_cpu_uses_bit_for_bit(masked):
    """Off the CPU, attention over the shared cache is plain matmuls; on it, torch's fused kernel, whose bits every CPU
    run's tokens so far came from. The two agree (values and log-sum-exp) up to float rounding, padding excluded."""
    from s2d_bench.generation.shared_prefix import attend, attend_plain

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, n, 8, generator=gen) for n in (1, 5, 5))
    bias = torch.zeros(3, 1, 1, 5).masked_fill(torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0] * 5]).bool()[:, None, None], float("-inf"))
    bias = bias if masked else None
    fused = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=bias, scale=0.3)
    out, lse = attend(q, k, v, bias, 0.3)
    assert torch.equal(out, fused[0]) and torch.equal(lse, fused[1])
    plain_out, plain_lse = attend_plain(q, k, v, bias, 0.3)
    torch.testing.assert_close(plain_out, out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain_lse, lse.reshape(plain_lse.shape), rtol=1e-5, atol=1e-6)
    low_out, low_lse = attend_plain(*(t.bfloat16() for t in (q, k, v)), bias, 0.3)  # a GPU's dtype: the scores in float32
    assert low_out.dtype == torch.bfloat16 and low_lse.dtype == torch.float32
    torch.testing.assert_close(low_out.float(), plain_out, rtol=0.05, atol=0.05)
    if masked:  # a padded position takes no weight: moving its value changes nothing
        v2 = v.clone()
        v2[0, :, :2] = 100.0
        torch.testing.assert_close(attend_plain(q, k, v2, bias, 0.3)[0], plain_out)


def test_shared_prefix_cache_grows_past_its_first_buffer_and_stops_at_its_budget(monkeypatch):
    from s2d_bench.generation.shared_prefix import SharedPrefixLayer

    monkeypatch.setattr(SharedPrefixLayer, "INITIAL", 2)
    keys = torch.randn(2, 3, 7, 4)  # 2 prompts, 3 KV heads, 7 prompt tokens (each size its own: a wrong axis shows)
    layer = SharedPrefixLayer(keys, keys.clone(), k=2, capacity=5)
    assert layer.gen_keys.shape == (4, 3, 2, 4)  # memory follows what is generated
    steps, sizes = [torch.randn(4, 3, 1, 4) for _ in range(5)], []
    for step in steps:
        got_keys, got_values = layer.update(step, -step)
        sizes.append(layer.gen_keys.shape[-2])
    assert sizes == [2, 2, 4, 4, 5]  # grown only when full: doubled, at most the capacity
    assert torch.equal(got_keys, torch.cat(steps, dim=2)) and torch.equal(got_values, -got_keys)
    assert layer.get_seq_length() == 7 + 5
    with pytest.raises(RuntimeError, match="capacity 5"):
        layer.update(steps[0], steps[0])


def test_the_uniforms_are_float64_and_greedy_is_each_rows_argmax():
    u = UniformStream(generators([1, 2]), 3, "cpu").at(0)
    assert u.dtype == torch.float64 and u.shape == (6,)
    logits = torch.tensor([[0.0, 5.0, 1.0], [9.0, 0.0, 1.0], [0.0, 1.0, 7.0]])
    assert next_token(logits, Sampling(temperature=0.0), None).tolist() == [1, 0, 2]


def test_top_p_at_an_exact_tie_keeps_the_smallest_prefix_reaching_it():
    """Probabilities 0.5, 0.25, 0.25 and top_p 0.5: the first token alone reaches 0.5 (HF's and vLLM's nucleus)."""
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]])).repeat(200, 1)
    uniforms = torch.rand(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert set(next_token(logits, Sampling(top_p=0.5), uniforms).tolist()) == {0}
    assert set(next_token(logits, Sampling(top_p=0.75), uniforms).tolist()) == {0, 1}


def test_every_decode_step_sees_the_logits_transformers_computes(monkeypatch):
    """The logits the sampler draws from at each step are `generate`'s scores for the same greedy tokens: positions,
    the attention mask and the cache of left-padded prompts are those of transformers, step for step."""
    model, tok = MODELS.get("tiny-qwen3-teacher")(seed=3)
    prompts = ["1+2=", "123+456=", "99+1="]
    seen = []
    real = sampling_module.next_token

    def recording(logits, s, uniforms):
        seen.append(logits.clone())
        return real(logits, s, uniforms)

    monkeypatch.setattr(sampling_module, "next_token", recording)
    ids, mask = left_pad(encode_prompts(tok, prompts), tok.pad_token_id)
    tokens, _ = sample(model, ids, mask, Sampling(k=1, temperature=0.0, max_new_tokens=6), [-1], tok.pad_token_id, [0, 1, 2])
    ref = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=6, min_new_tokens=6, eos_token_id=None,
                         pad_token_id=tok.pad_token_id, output_logits=True, return_dict_in_generate=True)
    assert len(seen) == len(ref.logits) == 6
    for step, (ours, theirs) in enumerate(zip(seen, ref.logits)):
        torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-4, msg=f"step {step}")
    assert torch.equal(tokens, ref.sequences[:, ids.shape[1] :])


def test_rows_after_their_stop_hold_the_pad_id_and_the_width_is_the_longest_row():
    """A pad id other than 0 or 1 (Qwen's is 151,643) fills every position after a row's stop token, and the returned
    width is the longest row's, however early every row stopped."""
    model, tok = MODELS.get("tiny-qwen3-student")(seed=0)
    ids, mask = left_pad(encode_prompts(tok, ["1+1=", "22+3="]), tok.pad_token_id)
    stops = list(range(0, len(tok), 2))  # half the vocabulary ends a row: rows stop early, at different steps
    tokens, alive = sample(model, ids, mask, Sampling(k=4, temperature=1.0, max_new_tokens=30), stops, 57, [3, 4])
    lengths = alive.sum(1).long()
    assert tokens.shape[1] == int(lengths.max()) < 30
    for row, n in zip(tokens, lengths.tolist()):
        assert row[n - 1].item() in stops and (row[n:] == 57).all()


@pytest.mark.parametrize("shared", [True, False], ids=["shared-prefix", "repeated-cache"])
def test_rows_left_after_the_longest_prompts_leave_keep_their_padding_mask(monkeypatch, shared):
    """Both decode paths: the two longest prompts (no padding) are made to stop at their second token, so they leave
    the batch first and every prompt still generating is left-padded; its mask (the shared cache's prompt bias) must be
    kept for the rows that remain (the tokens are the loop's that never evicts)."""
    if not shared:
        monkeypatch.setattr(sampling_module, "sharing_prompts", lambda m: contextlib.nullcontext())
    model, tok = MODELS.get("tiny-qwen3-teacher")(seed=5)
    prompts = ["123+456=", "250+250=", "1+1=", "7", "5+5=", "9+9="]
    ids, mask = left_pad(encode_prompts(tok, prompts), tok.pad_token_id)
    s, seeds = Sampling(k=1, temperature=1.0, max_new_tokens=12), list(range(40, 46))
    monkeypatch.setattr(sampling_module, "EVICT_SHARE", float("inf"))
    free, _ = sample(model, ids, mask, s, [-1], tok.pad_token_id, seeds)  # no stop token: every row runs to the cap
    short = set(free[2:].flatten().tolist())
    stops = [int(free[0, 1]), int(free[1, 1])]
    assert not set(stops) & short and (mask[2:].sum(1) < mask[0].sum()).all()  # only the long prompts stop; the rest are padded
    kept_ids, kept_mask = sample(model, ids, mask, s, stops, tok.pad_token_id, seeds)
    monkeypatch.setattr(sampling_module, "EVICT_SHARE", 0.25)
    rows = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **kw: rows.append(kw["input_ids"].shape[0]) or original(*a, **kw))
    got_ids, got_mask = sample(model, ids, mask, s, stops, tok.pad_token_id, seeds)
    assert rows[-1] == 4  # the long prompts left
    assert torch.equal(got_ids, kept_ids) and torch.equal(got_mask, kept_mask)


@pytest.mark.parametrize("block", [7, 256])
def test_the_uniform_stream_gives_each_steps_per_step_draw(block):
    """Drawn a block of steps at a time (7: blocks cut mid-run; 256: one block), step t's uniforms are what a draw of k
    per prompt at every step gives at step t: a CPU generator's stream does not depend on how it is cut."""
    steps, k = 30, 3
    stream = UniformStream(generators([5, 6, 7]), k, "cpu", block=block)
    at_once = torch.stack([stream.at(t) for t in range(steps)])
    gens = generators([5, 6, 7])  # k a prompt, prompt-major, at every step
    per_step = torch.stack([torch.cat([torch.rand(k, generator=g, dtype=torch.float64) for g in gens]) for _ in range(steps)])
    assert at_once.dtype == torch.float64 and torch.equal(at_once, per_step)


@pytest.mark.parametrize("longest", [9, 4], ids=["9-tokens", "as-many-tokens-as-heads"])
def test_the_prefill_attends_each_prompt_causally_over_its_own_tokens(longest):
    """Rows of mixed lengths: each row's attention equals that prompt's own causal attention, unpadded, and is zero at its
    padding; rows of one length are one causal call on the batch, bit for bit the call an unpadded batch made before.
    The longest prompt has 9 tokens, or as many as the query heads (4), so that reading one axis for the other shows."""
    from s2d_bench.generation.shared_prefix import prefill_attention, prompt_groups

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, heads, longest, 8, generator=g) for heads in (4, 2, 2))  # grouped-query: 2 query heads a KV head
    lengths = torch.tensor({9: [9, 3, 6, 3], 4: [4, 2, 3, 2]}[longest])
    out, _ = prefill_attention(q, k, v, prompt_groups(lengths), 0.3)
    assert out.shape == (4, longest, 4, 8)
    for row, n in enumerate(lengths.tolist()):
        pad = longest - n
        alone = torch.nn.functional.scaled_dot_product_attention(q[row : row + 1, :, pad:], k[row : row + 1, :, pad:], v[row : row + 1, :, pad:],
                                                                 is_causal=True, scale=0.3, enable_gqa=True)
        torch.testing.assert_close(out[row, pad:], alone[0].transpose(0, 1), rtol=1e-6, atol=1e-6)
        assert not out[row, :pad].any()
    same, _ = prefill_attention(q, k, v, prompt_groups(torch.full((4,), longest)), 0.3)
    whole = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3, enable_gqa=True)
    assert torch.equal(same, whole.transpose(1, 2))


def test_a_prefill_of_prompts_of_one_length_is_the_models_own_forward_bit_for_bit():
    """The embedded task's prompts all have one length: their prefill is the model's plain causal forward, so no record
    of a run on them moves; mixed lengths give the padded forward's logits to rounding."""
    from s2d_bench.generation.shared_prefix import prefill, sharing_prompts
    from s2d_bench.models.builders import tiny_qwen3_teacher
    from s2d_bench.models.sequences import positions

    model, tok = tiny_qwen3_teacher(seed=4)
    model.eval()
    for prompts in (["12+34=", "56+78=", "90+12="], ["1+1=", "123+456=", "7"]):
        ids, mask = left_pad(encode_prompts(tok, prompts), tok.pad_token_id)
        with torch.no_grad(), sharing_prompts(model):
            logits, cache = prefill(model, ids, mask, 2, 8)
            ref = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=True, logits_to_keep=1)  # the prefill before
        if bool(mask.all()):
            assert torch.equal(logits, ref.logits[:, -1])
            assert all(torch.equal(a.prompt_keys, b.keys) and torch.equal(a.prompt_values, b.values)
                       for a, b in zip(cache.layers, ref.past_key_values.layers))
        else:
            torch.testing.assert_close(logits, ref.logits[:, -1], rtol=1e-5, atol=1e-5)


def test_each_sample_ends_at_its_own_stop_and_the_engine_reports_every_sample_done():
    """k samples of a prompt end at different steps: each keeps its own tokens up to and including its stop (or the cap),
    whether asked as texts or as token rows, and the progress callback counts every sample."""
    model, tok = MODELS.get("tiny-qwen3-student")(seed=2)
    engine = HFEngine(model, tok, EngineConfig(prompts_per_batch=2))
    prompts, s = ["1+1=", "23+4=", "9="], Sampling(k=8, temperature=1.0, max_new_tokens=40)
    seeds, seen = prompt_seeds(3, len(prompts)), []
    out = engine.generate(prompts, s, seeds, seen.append)
    assert sum(seen) == len(out) == 24 and len({len(c.ids) for c in out}) > 2  # lengths differ within prompts
    stops = set(engine.eos_ids)
    for c in out:
        first = next((i for i, t in enumerate(c.ids) if t in stops), None)
        assert (first == len(c.ids) - 1) if first is not None else len(c.ids) == s.max_new_tokens
        assert c.tokens == len(c.ids)
    seen.clear()
    again = engine.generate_ids(render(tok, prompts, False), s, seeds, seen.append)
    assert [c.ids for c in again] == [c.ids for c in out] and sum(seen) == 24
    with pytest.raises(ValueError, match=r"^2 seeds for 3 prompts: one seed per prompt$"):
        engine.generate(prompts, s, seeds[:2])


def test_a_non_thinking_engine_checks_and_batches_prompts_as_it_renders_them(monkeypatch):
    """With a template that renders the two prompt modes apart, the context check and the batches an engine reports
    (C2 scores in them) follow the engine's own mode: the batches are the ones it samples in."""
    from s2d_bench.errors import UserError

    model, tok = MODELS.get("tiny-qwen3-student")(seed=2)
    tok.chat_template = QWEN3_LIKE
    prompts = ["12+34=", "56+78="]
    size = len(render(tok, prompts[:1], False)[0])
    assert size > len(render(tok, prompts[:1], True)[0])  # the empty think block of a non-thinking reply
    model.config.max_position_embeddings = size + 5
    engine = HFEngine(model, tok, EngineConfig(prompts_per_batch=0, max_batch_tokens=2 * (size - 1 + 4), thinking=False))
    engine.check_prompts(prompts, ["a", "b"], 5)  # fills the context exactly
    with pytest.raises(UserError, match=rf"prompt \({size} tokens\) \+ max_new_tokens \(6\) exceed the model's context of {size + 5} tokens"):
        engine.check_prompts(prompts, ["a", "b"], 6)
    s, shapes = Sampling(k=1, temperature=1.0, max_new_tokens=4), _decode_batches(monkeypatch)
    engine.generate(prompts, s, prompt_seeds(0, 2))
    assert [len(b) for b in engine.batches(prompts, s)] == [b for b, _ in shapes] == [1, 1]  # two of them are over the bound


def test_prompts_of_like_length_share_a_batch_within_the_count_and_the_token_bound():
    """Batches take prompts shortest first (the least left padding), at most prompts_per_batch of them (0: all), and at
    most max_batch_tokens KV positions, k x (the batch's longest prompt + max_new_tokens) each: a bound met exactly fits."""
    model, tok = MODELS.get("tiny-qwen3-student")(seed=2)
    prompts = ["1234+5678=", "1=", "123+4=", "12="]
    size = [len(r) for r in render(tok, prompts, False)]
    assert size[1] < size[3] < size[2] < size[0]
    s = Sampling(k=3, temperature=1.0, max_new_tokens=5)
    batches = lambda **cfg: HFEngine(model, tok, EngineConfig(**cfg)).batches(prompts, s)  # noqa: E731
    assert batches(prompts_per_batch=2) == [[1, 3], [2, 0]]
    assert batches(prompts_per_batch=0) == [[1, 3, 2, 0]]
    two = 2 * s.k * (size[3] + s.max_new_tokens)  # the two shortest, exactly
    assert batches(prompts_per_batch=0, max_batch_tokens=two) == [[1, 3], [2], [0]]
    assert batches(prompts_per_batch=0, max_batch_tokens=two - 1) == [[1], [3], [2], [0]]
    live = lambda **cfg: HFEngine.live(model, tok, RolloutConfig(**cfg), thinking=False, trained=True).batches(prompts, s)  # noqa: E731
    assert live(max_batch_tokens=two) == [[1, 3], [2], [0]] and live(prompts_per_batch=2) == [[1, 3], [2, 0]]  # a stage's rollouts: its bounds


def test_the_sampler_never_draws_an_id_past_the_tokenizer_of_a_padded_embedding():
    """Checkpoints pad their embedding past the tokenizer (Qwen3: 151,936 rows for 151,669 tokens): rows no text maps to."""
    model, tok = MODELS.get("tiny-qwen3-student")(seed=2)
    model.resize_token_embeddings(len(tok) + 40, mean_resizing=False)
    with torch.no_grad():
        model.get_output_embeddings().weight[len(tok):] *= 50  # the padding rows would win many draws
    out = HFEngine(model, tok, EngineConfig()).generate(["1+1=", "22+3="], Sampling(k=8, temperature=1.0, max_new_tokens=12),
                                                       prompt_seeds(1, 2))
    assert max(t for c in out for t in c.ids) < len(tok)
