import math

import pytest
import torch

from s2d_bench import losses


def logits_of(*probs):
    """(1, T, V) logits whose softmax is exactly the given rows."""
    return torch.tensor([probs], dtype=torch.float64).log()


def test_grpo_advantages_are_group_normalised_by_hand():
    adv = losses.grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]), eps=0.0 + 1e-12)
    # group 1: mean 0.5, unbiased std sqrt(1/3) -> +-0.5 / 0.57735 = +-0.8660
    assert adv[0].tolist() == pytest.approx([0.8660254, -0.8660254, -0.8660254, 0.8660254], abs=1e-6)
    # a group with one outcome carries no signal
    assert adv[1].abs().max().item() == 0.0


def test_grpo_advantages_unscaled_only_centre():
    adv = losses.grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), scale=False)
    assert adv[0].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_policy_loss_clips_asymmetrically_and_takes_token_mean():
    # seq 0: tokens with ratio 1.5 and 1.0, A = +1; seq 1: ratio 0.5 and a padded slot, A = -1
    old = torch.zeros(2, 2)
    logp = torch.tensor([[math.log(1.5), 0.0], [math.log(0.5), 5.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    loss, stats = losses.policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.3)
    # token losses: -min(1.5, 1.3) = -1.3; -min(1.0, 1.0) = -1.0; -min(-0.5, -0.8) = 0.8
    assert loss.item() == pytest.approx((-1.3 - 1.0 + 0.8) / 3)
    assert stats["clip_frac"] == pytest.approx(2 / 3)


def test_grpo_advantages_use_the_default_epsilon_of_1e_4():
    adv = losses.grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    assert adv[0, 0].item() == pytest.approx(0.5 / (math.sqrt(1 / 3) + 1e-4), rel=1e-6)


def test_policy_loss_by_hand_with_a_nonzero_old_policy_and_advantages_other_than_one():
    """rho = exp(logp - old_logp), weighted by A (not divided by it), at the default clip of 0.2."""
    old = torch.tensor([[math.log(0.5), math.log(0.4)], [math.log(0.8), math.log(0.3)]])
    logp = torch.tensor([[math.log(0.75), math.log(0.4)], [math.log(0.4), 5.0]])  # ratios 1.5, 1.0, 0.5 and a padded slot
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([2.0, -0.5])
    loss, stats = losses.policy_loss(logp, old, adv, mask, clip_high=0.3)
    # -min(3.0, 2.6) = -2.6; -min(2, 2) = -2; -min(-0.25, 0.8 * -0.5) = 0.4
    assert loss.item() == pytest.approx((-2.6 - 2.0 + 0.4) / 3, rel=1e-6)
    assert stats["clip_frac"] == pytest.approx(2 / 3) and "kl_ref" not in stats


def test_policy_loss_gradient_vanishes_outside_the_clip():
    logp = torch.tensor([[math.log(1.5)]], requires_grad=True)
    loss, _ = losses.policy_loss(logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1))
    loss.backward()
    assert logp.grad.item() == 0.0


def test_policy_loss_k3_kl_to_reference():
    logp = torch.tensor([[math.log(0.8)]])
    ref = torch.tensor([[math.log(0.4)]])
    loss, stats = losses.policy_loss(logp, logp, torch.tensor([0.0]), torch.ones(1, 1), ref_logp=ref, kl_coef=0.1)
    k3 = 0.5 - math.log(0.5) - 1.0  # exp(r) - r - 1 with r = ref - logp = log 0.5
    assert stats["kl_ref"] == pytest.approx(k3)
    assert loss.item() == pytest.approx(0.1 * k3)
    off, stats = losses.policy_loss(logp, logp, torch.tensor([0.0]), torch.ones(1, 1), ref_logp=ref)  # kl_coef 0 by default: no term
    assert off.item() == 0.0 and "kl_ref" not in stats
    no_ref, _ = losses.policy_loss(logp, logp, torch.tensor([0.0]), torch.ones(1, 1), kl_coef=0.1)  # no reference: nothing to add
    assert no_ref.item() == 0.0


def test_forward_and_reverse_kl_by_hand():
    teacher = logits_of([0.5, 0.5], [0.9, 0.1])
    student = logits_of([0.25, 0.75], [0.1, 0.9])
    mask = torch.tensor([[1.0, 0.0]])  # second position is padding and must not count
    fwd = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    rev = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert losses.forward_kl(student, teacher, mask).item() == pytest.approx(fwd)
    assert losses.reverse_kl(student, teacher, mask).item() == pytest.approx(rev)
    assert fwd != pytest.approx(rev)  # the two directions are different objectives


def test_kl_is_zero_iff_equal_and_invariant_to_logit_shift():
    z = torch.randn(2, 3, 7)
    mask = torch.ones(2, 3)
    assert losses.reverse_kl(z, z + 3.0, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.forward_kl(z, torch.randn(2, 3, 7), mask).item() > 0


def test_reverse_kl_gradient_equals_closed_form():
    # d/dz_j KL(softmax(z) || q) = p_j (log p_j - log q_j - KL), averaged over the real tokens
    torch.manual_seed(0)
    z = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 5, dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    losses.reverse_kl(z, t, mask).backward()
    p, logp, logq = z.softmax(-1), z.log_softmax(-1), t.log_softmax(-1)
    kl = (p * (logp - logq)).sum(-1, keepdim=True)
    expected = p * (logp - logq - kl) * mask.unsqueeze(-1) / mask.sum()
    assert torch.allclose(z.grad, expected.detach(), atol=1e-12)


def test_sampled_estimator_is_unbiased_for_the_exact_reverse_kl_gradient():
    # E_{y ~ p_S}[grad of the sampled loss at y] must equal the gradient of the exact KL
    torch.manual_seed(1)
    z = torch.randn(1, 1, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 1, 6, dtype=torch.float64)
    mask = torch.ones(1, 1, dtype=torch.float64)
    exact = torch.autograd.grad(losses.reverse_kl(z, t, mask), z)[0]
    p = z.softmax(-1).detach()
    expected = torch.zeros_like(z)
    for y in range(6):
        tok = torch.tensor([[y]])
        s_logp = z.log_softmax(-1).gather(-1, tok.unsqueeze(-1)).squeeze(-1)
        t_logp = t.log_softmax(-1).gather(-1, tok.unsqueeze(-1)).squeeze(-1)
        expected += p[0, 0, y] * torch.autograd.grad(losses.sampled_reverse_kl(s_logp, t_logp, mask), z)[0]
    assert torch.allclose(exact, expected, atol=1e-10)


def test_sampled_reverse_kl_value_by_hand():
    s = torch.tensor([[math.log(0.5)]])
    t = torch.tensor([[math.log(0.25)]])
    # advantage = log 0.25 - log 0.5 = -log 2; loss = -A * log p_S = -(-log 2)(log 0.5) = -(log 2)^2
    assert losses.sampled_reverse_kl(s, t, torch.ones(1, 1)).item() == pytest.approx(-(math.log(2) ** 2))


def test_entropy_and_nll_by_hand():
    z = logits_of([0.5, 0.5], [1.0, 1e-30])
    mask = torch.tensor([[1.0, 1.0]])
    assert losses.entropy(z, mask).item() == pytest.approx(math.log(2) / 2, abs=1e-6)
    tokens = torch.tensor([[1, 0]])
    assert losses.token_nll(z, tokens, mask).item() == pytest.approx(math.log(2) / 2, abs=1e-6)


def test_top_k_kl_on_batched_positions_is_the_kl_of_each_position():
    """(N, T, V) logits with N, T and V all different: every position's top-k KL is the one of that position alone."""
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 3, 7, generator=g), torch.randn(2, 3, 7, generator=g)
    for direction in losses.DIRECTIONS:
        for k in (3, 7):
            batched = losses.token_kl_topk(s, t, direction, k)
            alone = torch.stack([torch.stack([losses.token_kl_topk(s[i, j][None], t[i, j][None], direction, k)[0] for j in range(3)])
                                 for i in range(2)])
            assert batched.shape == (2, 3)
            torch.testing.assert_close(batched, alone)
    assert not torch.allclose(losses.token_kl_topk(s, t, "forward", 3), losses.token_kl_topk(s, t, "forward", 7))


def test_teacher_forced_nll_on_batched_positions_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))  # (1, 2, 3): T != V
    nll = losses.token_nll(logits, torch.tensor([[1, 2]]), torch.ones(1, 2))
    assert nll.item() == pytest.approx(-(math.log(0.25) + math.log(0.8)) / 2, rel=1e-6)


def test_a_pair_padded_to_two_widths_is_compared_over_the_shared_rows_and_a_direction_is_checked():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 10, generator=g), torch.randn(4, 12, generator=g)
    a, b = losses.shared_vocabulary(s, t)
    assert a.shape == b.shape == (4, 10) and torch.equal(b, t[:, :10])
    a, b = losses.shared_vocabulary(t, s)
    assert a.shape == b.shape == (4, 10) and torch.equal(a, t[:, :10])
    torch.testing.assert_close(losses.token_kl(s, t, "reverse"), losses.token_kl(s, t[:, :10], "reverse"))
    with pytest.raises(ValueError, match="KL direction 'REVERSE'"):
        losses.token_kl(s, t, "REVERSE")
    with pytest.raises(ValueError, match="KL direction 'backward'"):
        losses.kl_from_logp(s, s, "backward")


def test_every_declared_estimator_is_implemented_and_only_those():
    """estimators.ESTIMATORS (read by the config check and the preflight) and losses.ESTIMATE (what trains) agree."""
    from s2d_bench.estimators import ESTIMATORS

    assert set(losses.ESTIMATE) == set(ESTIMATORS)
    s_logp, t_logp = torch.randn(3, 7).log_softmax(-1), torch.randn(3, 7).log_softmax(-1)
    tokens = torch.tensor([0, 4, 6])
    for name, estimator in ESTIMATORS.items():
        for direction in estimator.directions:
            assert losses.ESTIMATE[name](s_logp, t_logp, tokens, direction, 3).shape == (3,)
    torch.testing.assert_close(losses.ESTIMATE["full"](s_logp, t_logp, tokens, "forward", 3), losses.kl_from_logp(s_logp, t_logp, "forward"))
    torch.testing.assert_close(losses.ESTIMATE["topk"](s_logp, t_logp, tokens, "reverse", 3), losses.topk_kl_from_logp(s_logp, t_logp, "reverse", 3))
    picked = (t_logp - s_logp).gather(-1, tokens[:, None]).squeeze(-1) * -s_logp.gather(-1, tokens[:, None]).squeeze(-1)
    torch.testing.assert_close(losses.ESTIMATE["sampled"](s_logp, t_logp, tokens, "reverse", 3), picked)


def test_top_k_from_the_teachers_top_k_alone_is_the_top_k_kl():
    """`topk_kl_given` with the tail the teacher's k log-probs leave (`log_tail_from_top`) is `topk_kl_from_logp`, which
    has the whole teacher; at k = V no tail enters and the value is the full KL."""
    g = torch.Generator().manual_seed(3)
    s_logp = torch.log_softmax(torch.randn(6, 9, generator=g), -1)
    t_logp = torch.log_softmax(2 * torch.randn(6, 9, generator=g), -1)
    for direction in ("forward", "reverse"):
        for k in (1, 4, 8):
            top, ids = t_logp.topk(k, -1)
            given = losses.topk_kl_given(s_logp, top, ids, losses.log_tail_from_top(top), direction)
            # two float32 roads to the tail (a log-sum-exp over the rest, log1p of minus the top's mass): 1e-5 apart at most
            torch.testing.assert_close(given, losses.topk_kl_from_logp(s_logp, t_logp, direction, k), rtol=1e-4, atol=1e-6)
        top, ids = t_logp.topk(9, -1)
        full = losses.topk_kl_given(s_logp, top, ids, torch.full((6, 1), float("nan")), direction)  # the tail is never read
        torch.testing.assert_close(full, losses.kl_from_logp(s_logp, t_logp, direction))


def test_the_tail_of_a_top_k_is_the_rest_of_the_mass_floored_where_rounding_leaves_none():
    top = torch.log(torch.tensor([[0.5, 0.25], [0.6, 0.4], [0.7, 0.31]]))  # tails 0.25, 0 and below 0 (rounding)
    tail = losses.log_tail_from_top(top).exp().squeeze(-1)
    assert tail[0].item() == pytest.approx(0.25, rel=1e-6)
    assert tail[1].item() == pytest.approx(losses.TAIL_FLOOR, rel=1e-3) and tail[2].item() == pytest.approx(losses.TAIL_FLOOR, rel=1e-3)
    kl = losses.topk_kl_given(torch.log_softmax(torch.zeros(3, 5), -1), top, torch.tensor([[0, 1]] * 3), losses.log_tail_from_top(top), "forward")
    assert torch.isfinite(kl).all()  # a tail of 0 never meets log 0


def test_the_served_estimators_are_the_local_ones_and_full_is_not_among_them():
    from s2d_bench.estimators import ESTIMATORS, served

    assert set(losses.ESTIMATE_SERVED) == set(served()) == {n for n, e in ESTIMATORS.items() if e.served} == {"topk", "sampled"}
    g = torch.Generator().manual_seed(4)
    s_logp = torch.log_softmax(torch.randn(5, 7, generator=g), -1)
    t_logp = torch.log_softmax(torch.randn(5, 7, generator=g), -1)
    tokens = torch.randint(0, 7, (5,), generator=g)
    top, ids = t_logp.topk(3, -1)
    t_token = t_logp.gather(-1, tokens[:, None]).squeeze(-1)
    for direction in ("forward", "reverse"):
        torch.testing.assert_close(losses.ESTIMATE_SERVED["topk"](s_logp, tokens, t_token, ids, top, direction),
                                   losses.ESTIMATE["topk"](s_logp, t_logp, tokens, direction, 3), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses.ESTIMATE_SERVED["sampled"](s_logp, tokens, t_token, ids, top, "reverse"),
                               losses.ESTIMATE["sampled"](s_logp, t_logp, tokens, "reverse", 3))


def test_top_k_given_by_hand_on_batched_positions():
    """The top-k + tail KL on (2, 3, V) positions against the coarsened distributions written out in float64: the k
    tokens' probabilities and one bucket holding the rest, for each model."""
    g = torch.Generator().manual_seed(5)
    s_logp = torch.log_softmax(torch.randn(2, 3, 6, generator=g), -1)
    t_logp = torch.log_softmax(2 * torch.randn(2, 3, 6, generator=g), -1)
    for k in (2, 4):
        top, ids = t_logp.topk(k, -1)
        p_t, p_s = top.double().exp(), s_logp.double().exp().gather(-1, ids)
        t_all = torch.cat([p_t, 1 - p_t.sum(-1, keepdim=True)], -1)
        s_all = torch.cat([p_s, 1 - p_s.sum(-1, keepdim=True)], -1)
        want = {"forward": (t_all * (t_all.log() - s_all.log())).sum(-1), "reverse": (s_all * (s_all.log() - t_all.log())).sum(-1)}
        for direction in ("forward", "reverse"):
            got = losses.topk_kl_given(s_logp, top, ids, losses.log_tail_from_top(top), direction)
            assert got.shape == (2, 3)
            torch.testing.assert_close(got.double(), want[direction], rtol=1e-4, atol=1e-6)
    tail = losses.log_tail_from_top(t_logp.topk(2, -1)[0])
    assert tail.shape == (2, 3, 1)
    torch.testing.assert_close(tail.exp().squeeze(-1), 1 - t_logp.topk(2, -1)[0].exp().sum(-1), rtol=1e-5, atol=1e-7)
