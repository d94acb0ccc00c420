"""The chunked distillation loss: same value and gradients as all-at-once, and the top-k estimator."""

import pytest
import torch

from s2d_bench import chunked, losses

N, T, H, V = 3, 5, 8, 11
OBJECTIVES = [chunked.Objective("forward"), chunked.Objective("reverse"), chunked.Objective("reverse", "topk", 4),
              chunked.Objective("forward", "topk", 4), chunked.Objective("reverse", "sampled")]


def _world(seed=0):
    g = torch.Generator().manual_seed(seed)
    s_head, t_head = torch.nn.Linear(H, V, bias=False), torch.nn.Linear(H, V, bias=False)
    with torch.no_grad():
        s_head.weight.copy_(torch.randn(V, H, generator=g))
        t_head.weight.copy_(torch.randn(V, H, generator=g))
    s_hidden = torch.randn(N, T, H, generator=g, requires_grad=True)
    t_hidden = torch.randn(N, T, H, generator=g)
    tokens = torch.randint(0, V, (N, T), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.float)
    return s_hidden, s_head, t_hidden, t_head, tokens, mask


def _loss_and_grads(objective, chunk, min_chunks=1):
    s_hidden, s_head, t_hidden, t_head, tokens, mask = _world()
    loss, stats = chunked.distill_loss(s_hidden, s_head, t_hidden, t_head, tokens, mask, objective, chunk, min_chunks)
    loss.backward()
    return loss.detach(), s_hidden.grad, s_head.weight.grad, stats


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: f"{o.direction}-{o.estimator}")
@pytest.mark.parametrize("chunk", [1, 3, 5])
def test_chunked_loss_and_gradients_equal_the_unchunked_ones(objective, chunk):
    whole = _loss_and_grads(objective, 0)
    parts = _loss_and_grads(objective, chunk)
    for a, b in zip(whole[:3], parts[:3]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # float32 rounding; a lost or double-counted chunk is >1%
    assert whole[3] == pytest.approx(parts[3], rel=1e-5)


def test_padding_chunks_for_other_ranks_changes_nothing():
    objective = chunked.Objective("reverse")
    base, padded = _loss_and_grads(objective, 4), _loss_and_grads(objective, 4, min_chunks=7)  # 11 tokens: 3 chunks, padded to 7
    for a, b in zip(base[:3], padded[:3]):
        torch.testing.assert_close(a, b)


def test_the_unchunked_loss_is_the_logit_loss_of_losses_py():
    s_hidden, s_head, t_hidden, t_head, tokens, mask = _world()
    s_logits, t_logits = s_head(s_hidden), t_head(t_hidden)
    for direction, reference in (("forward", losses.forward_kl), ("reverse", losses.reverse_kl)):
        loss, stats = chunked.distill_loss(s_hidden, s_head, t_hidden, t_head, tokens, mask, chunked.Objective(direction), 2)
        assert loss.item() == pytest.approx(reference(s_logits, t_logits, mask).item(), rel=1e-5)
        assert stats[f"kl_{direction}"] == pytest.approx(loss.item(), rel=1e-5)
    assert stats["entropy"] == pytest.approx(losses.entropy(s_logits, mask).item(), rel=1e-5)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_top_k_kl_is_a_lower_bound_that_reaches_the_full_kl_at_k_equal_v(direction):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(20, V, generator=g), torch.randn(20, V, generator=g) * 3
    full = losses.token_kl(s, t, direction)
    torch.testing.assert_close(losses.token_kl_topk(s, t, direction, V), full, rtol=1e-4, atol=1e-5)
    previous = torch.zeros_like(full)
    for k in (1, 3, 6, 9):  # coarser partitions lose information: KL grows with k, never above the full KL
        value = losses.token_kl_topk(s, t, direction, k)
        assert (value >= -1e-6).all() and (value <= full + 1e-5).all() and (value >= previous - 1e-5).all()
        previous = value


def test_top_k_kl_by_hand():
    """Teacher (0.5, 0.3, 0.2), student (0.2, 0.3, 0.5), k=1: buckets {token 0} vs the rest."""
    t, s = torch.tensor([[0.5, 0.3, 0.2]]).log(), torch.tensor([[0.2, 0.3, 0.5]]).log()
    expected = 0.5 * torch.log(torch.tensor(0.5 / 0.2)) + 0.5 * torch.log(torch.tensor(0.5 / 0.8))
    assert losses.token_kl_topk(s, t, "forward", 1).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("chunk", [0, 2, 4])
def test_chunked_token_logprobs_equal_the_logits_path_with_gradients(chunk):
    s_hidden, s_head, _, _, tokens, mask = _world()
    logp, entropy = chunked.token_logprobs(s_hidden, s_head, tokens, mask, chunk, min_chunks=5)
    logits = s_head(s_hidden)
    reference = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1) * mask
    torch.testing.assert_close(logp, reference)
    assert losses.masked_mean(entropy, mask).item() == pytest.approx(losses.entropy(logits, mask).item(), rel=1e-5)
    weights = torch.randn(N, T, generator=torch.Generator().manual_seed(3))
    ours = torch.autograd.grad((logp * weights).sum(), [s_hidden, s_head.weight])
    theirs = torch.autograd.grad((reference * weights).sum(), [s_hidden, s_head.weight])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # float32 rounding; a lost or double-counted chunk is >1%


def test_top_k_tail_is_exact_when_the_teachers_top_tokens_hold_almost_all_the_mass():
    """The tail bucket is a log-sum-exp over the complement: no clamp, so a teacher tail of e^-30
    against a student tail of 0.9 gives the exact coarse KL (the old 1 - 1e-7 clamp gave about 14.4)."""
    t = torch.tensor([[0.0, -30.0, -31.0, -32.0]], dtype=torch.float64)
    s = torch.tensor([[0.1, 0.5, 0.3, 0.1]], dtype=torch.float64).log()
    t_logp, s_logp = t.log_softmax(-1), s.log_softmax(-1)
    t_tail, s_tail = t_logp[0, 1:].logsumexp(0), torch.log(torch.tensor(0.9, dtype=torch.float64))
    exact = 0.1 * (s_logp[0, 0] - t_logp[0, 0]) + 0.9 * (s_tail - t_tail)  # reverse KL over {top token, rest}
    got = losses.topk_kl_from_logp(s_logp.float(), t_logp.float(), "reverse", 1)
    assert exact.item() > 26.0
    assert got.item() == pytest.approx(exact.item(), rel=1e-5)
    forward = losses.topk_kl_from_logp(s_logp.float(), t_logp.float(), "forward", 1)
    assert torch.isfinite(forward).all() and forward.item() == pytest.approx(
        (t_logp[0, 0].exp() * (t_logp[0, 0] - s_logp[0, 0]) + t_tail.exp() * (t_tail - s_tail)).item(), rel=1e-4)


def test_the_sampled_estimator_that_trains_is_the_one_in_losses():
    """chunked's sampled objective is losses.sampled_reverse_kl token by token (one estimator, once)."""
    s_hidden, s_head, t_hidden, t_head, tokens, mask = _world()
    keep = mask.bool()
    s_logp = torch.log_softmax(s_head(s_hidden).float(), -1)
    t_logp = torch.log_softmax(t_head(t_hidden).float(), -1)
    pick = lambda logp: logp.gather(-1, tokens[..., None]).squeeze(-1)  # noqa: E731
    reference = losses.sampled_reverse_kl(pick(s_logp), pick(t_logp), mask)
    loss, _ = chunked.distill_loss(s_hidden, s_head, t_hidden, t_head, tokens, mask, chunked.Objective("reverse", "sampled"), 2)
    torch.testing.assert_close(loss, reference, rtol=1e-4, atol=1e-6)  # float32 in another order: 5e-5 relative on AVX2 kernels
    g_ref = torch.autograd.grad(reference, s_hidden, retain_graph=True)[0]
    g_chunked = torch.autograd.grad(loss, s_hidden)[0]
    torch.testing.assert_close(g_chunked[keep], g_ref[keep], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_the_sampled_reverse_kl_gradient_is_the_exact_one_at_the_sampling_temperature(temperature):
    """Samples come from softmax(logits / T): the sampled-token estimator's expected gradient (over tokens
    y ~ p_S at T, summed exactly) equals the gradient of the exact KL(S || T) between both distributions at T."""
    g = torch.Generator().manual_seed(3)
    s_head, t_head = torch.nn.Linear(H, V, bias=False), torch.nn.Linear(H, V, bias=False)
    with torch.no_grad():
        s_head.weight.copy_(torch.randn(V, H, generator=g))
        t_head.weight.copy_(torch.randn(V, H, generator=g))
    hidden, t_hidden = torch.randn(1, 1, H, generator=g), torch.randn(1, 1, H, generator=g)

    def grad(objective, token, temp):
        s_head.weight.grad = None
        loss, _ = chunked.distill_loss(hidden, s_head, t_hidden, t_head, torch.tensor([[token]]), torch.ones(1, 1), objective,
                                       temperature=temp)
        loss.backward()
        return s_head.weight.grad.clone()

    p_s = torch.softmax(s_head(hidden).detach() / temperature, -1).flatten()
    sampled = chunked.Objective("reverse", "sampled")
    expected = sum(p_s[y] * grad(sampled, y, temperature) for y in range(V))
    exact = grad(chunked.Objective("reverse"), 0, temperature)
    torch.testing.assert_close(expected, exact, rtol=1e-4, atol=1e-5)
    if temperature != 1.0:  # the same samples scored at T = 1 (as before) give a biased gradient
        biased = sum(p_s[y] * grad(sampled, y, 1.0) for y in range(V))
        assert (biased - exact).abs().max() > 1e-2


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: f"{o.direction}-{o.estimator}")
def test_the_chunked_objective_and_its_statistics_are_the_per_token_maths_of_losses_py(objective):
    """Against the logits computed here: the objective is the one its estimator names (top-k and sampled are not the
    full KL), and the statistics are the token means of KL(T||S), KL(S||T) and the student's entropy."""
    s_hidden, s_head, t_hidden, t_head, tokens, mask = _world()
    loss, stats = chunked.distill_loss(s_hidden, s_head, t_hidden, t_head, tokens, mask, objective, chunk=2)
    keep = mask.bool()
    s_logp, t_logp = torch.log_softmax(s_head(s_hidden[keep]), -1), torch.log_softmax(t_head(t_hidden[keep]), -1)
    if objective.estimator == "topk":
        per_token = losses.topk_kl_from_logp(s_logp, t_logp, objective.direction, objective.top_k)
    elif objective.estimator == "sampled":
        pick = tokens[keep][:, None]
        per_token = losses.sampled_reverse_kl_per_token(s_logp.gather(-1, pick).squeeze(-1), t_logp.gather(-1, pick).squeeze(-1))
    else:
        per_token = losses.kl_from_logp(s_logp, t_logp, objective.direction)
    assert loss.item() == pytest.approx(per_token.mean().item(), rel=1e-4, abs=1e-6)
    if objective.estimator != "full":
        assert loss.item() != pytest.approx(losses.kl_from_logp(s_logp, t_logp, objective.direction).mean().item(), rel=1e-3)
    expected = {"kl_forward": losses.kl_from_logp(s_logp, t_logp, "forward").mean().item(),
                "kl_reverse": losses.kl_from_logp(s_logp, t_logp, "reverse").mean().item(),
                "entropy": losses.entropy_from_logp(s_logp).mean().item()}
    assert stats == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_one_token_and_no_token_at_all():
    """A batch with a single completion token is that token's value (not halved); one with none (a rank's padded
    micro-batch) gives a zero loss with a gradient path and log-probabilities of zero, padded to min_chunks calls."""
    s_hidden, s_head, t_hidden, t_head, tokens, _ = _world()
    one = torch.zeros(N, T)
    one[1, 0] = 1
    loss, stats = chunked.distill_loss(s_hidden, s_head, t_hidden, t_head, tokens, one, chunked.Objective("forward"))
    s_logp, t_logp = torch.log_softmax(s_head(s_hidden[1, 0]), -1), torch.log_softmax(t_head(t_hidden[1, 0]), -1)
    assert loss.item() == pytest.approx(losses.kl_from_logp(s_logp, t_logp, "forward").item(), rel=1e-5)
    calls = []
    s_head.register_forward_hook(lambda *a: calls.append(1))
    none = torch.zeros(N, T)
    loss, stats = chunked.distill_loss(s_hidden, s_head, t_hidden, t_head, tokens, none, chunked.Objective("forward"), chunk=2, min_chunks=3)
    assert loss.item() == 0.0 and stats == {"kl_forward": 0.0, "kl_reverse": 0.0, "entropy": 0.0} and len(calls) == 3
    logp, entropy = chunked.token_logprobs(s_hidden, s_head, tokens, none, chunk=2, min_chunks=3)
    assert logp.shape == entropy.shape == (N, T) and not logp.any() and logp.dtype == torch.float32
    logp, _ = chunked.token_logprobs(s_hidden, s_head, tokens, none)  # no chunking, nothing to compute
    assert logp.shape == (N, T) and not logp.any()


@pytest.mark.parametrize("chunk, calls", [(0, 1), (1, 11), (4, 3), (10, 2), (11, 1), (64, 1)])
def test_n_chunks_is_the_number_of_head_calls_the_loss_makes(chunk, calls):
    """Ranks agree on this count (rt.most) so each makes the same number of collective head calls: it must be exact."""
    s_hidden, s_head, t_hidden, t_head, tokens, mask = _world()  # 11 completion tokens
    made = []
    s_head.register_forward_hook(lambda *a: made.append(1))
    chunked.distill_loss(s_hidden, s_head, t_hidden, t_head, tokens, mask, chunked.Objective("forward"), chunk, 1)
    assert chunked.n_chunks(mask, chunk) == calls == len(made)
    assert chunked.n_chunks(torch.zeros_like(mask), chunk) == 1  # an empty micro-batch still makes its one call


# ---------------------------------------------------------------- a served teacher: its sampled-token and top-k log-probs


def _served_view(t_hidden, t_head, tokens, k):
    """What a server sends of the teacher at temperature 1 (served/teacher.py's TeacherLogprobs): the log-prob of each
    completion token and the top k (ids and log-probs), computed here from the full distribution."""
    from s2d_bench.served.teacher import TeacherLogprobs

    with torch.no_grad():
        t_logp = torch.log_softmax(t_head(t_hidden), dim=-1)
    top, ids = t_logp.topk(k, dim=-1)
    return TeacherLogprobs(t_logp.gather(-1, tokens[..., None]).squeeze(-1), ids, top)


@pytest.mark.parametrize("objective, local", [(chunked.Objective("reverse", "sampled", 4), chunked.Objective("reverse", "sampled")),
                                              (chunked.Objective("reverse", "topk", 4), chunked.Objective("reverse", "topk", 4)),
                                              (chunked.Objective("forward", "topk", 4), chunked.Objective("forward", "topk", 4)),
                                              (chunked.Objective("reverse", "topk", V), chunked.Objective("reverse")),
                                              (chunked.Objective("forward", "topk", V), chunked.Objective("forward"))],
                         ids=["sampled", "topk-reverse", "topk-forward", "k=V-reverse", "k=V-forward"])
@pytest.mark.parametrize("chunk", [0, 3])
def test_the_served_loss_is_the_local_loss_from_the_same_teacher_log_probs(objective, local, chunk):
    """From the sampled token's log-prob and the top k, the served objective is the local one: the sampled estimator
    exactly, top-k + tail up to the tail's floor (1e-6 of mass), top-k at k = V the exact KL; loss and gradients."""
    s_hidden, s_head, t_hidden, t_head, tokens, mask = _world()
    loss, stats = chunked.distill_loss(s_hidden, s_head, t_hidden, t_head, tokens, mask, local, chunk)
    loss.backward()
    want = loss.detach(), s_hidden.grad.clone(), s_head.weight.grad.clone()
    s_hidden.grad, s_head.weight.grad = None, None
    view = _served_view(t_hidden, t_head, tokens, objective.top_k)
    served, served_stats = chunked.served_distill_loss(s_hidden, s_head, view, tokens, mask, objective, chunk)
    served.backward()
    for a, b in zip(want, (served.detach(), s_hidden.grad, s_head.weight.grad)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    if objective.top_k == V:  # no tail: the top-k statistics are the exact KLs
        assert served_stats["kl_forward_topk"] == pytest.approx(stats["kl_forward"], rel=1e-5)
        assert served_stats["kl_reverse_topk"] == pytest.approx(stats["kl_reverse"], rel=1e-5)
    assert served_stats["entropy"] == pytest.approx(stats["entropy"], rel=1e-5)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_the_served_sampled_statistic_is_each_directions_log_ratio_on_its_samples(direction):
    """kl_sampled: log p_S - log p_T of the sampled token on the student's samples (OPD), log p_T - log p_S on the
    teacher's (the warmup), token mean over the mask: each direction's single-sample KL estimate."""
    s_hidden, s_head, t_hidden, t_head, tokens, mask = _world()
    view = _served_view(t_hidden, t_head, tokens, 3)
    _, stats = chunked.served_distill_loss(s_hidden, s_head, view, tokens, mask, chunked.Objective(direction, "topk", 3), chunk=2)
    with torch.no_grad():
        s_lp = torch.log_softmax(s_head(s_hidden), dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    ratio = (s_lp - view.token) if direction == "reverse" else (view.token - s_lp)
    assert stats["kl_sampled"] == pytest.approx(losses.masked_mean(ratio, mask).item(), rel=1e-5)


def test_the_served_loss_pads_chunks_for_other_ranks_without_changing_anything():
    s_hidden, s_head, t_hidden, t_head, tokens, mask = _world()
    view = _served_view(t_hidden, t_head, tokens, 4)
    objective = chunked.Objective("reverse", "topk", 4)
    base, _ = chunked.served_distill_loss(s_hidden, s_head, view, tokens, mask, objective, 4)
    padded, _ = chunked.served_distill_loss(s_hidden, s_head, view, tokens, mask, objective, 4, min_chunks=7)
    torch.testing.assert_close(base, padded)


def test_one_served_token_is_that_tokens_value():
    s_hidden, s_head, t_hidden, t_head, tokens, _ = _world()
    one = torch.zeros(N, T)
    one[2, 3] = 1
    view = _served_view(t_hidden, t_head, tokens, 4)
    loss, stats = chunked.served_distill_loss(s_hidden, s_head, view, tokens, one, chunked.Objective("forward", "topk", 4))
    s_logp = torch.log_softmax(s_head(s_hidden[2, 3]), -1)
    top, ids = view.logp[2, 3], view.ids[2, 3]
    assert loss.item() == pytest.approx(losses.topk_kl_given(s_logp, top, ids, losses.log_tail_from_top(top), "forward").item(), rel=1e-5)
    assert stats["entropy"] == pytest.approx(losses.entropy_from_logp(s_logp).item(), rel=1e-5)
