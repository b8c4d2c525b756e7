"""Autograd gradients on the logits equal each paper's closed form.

The closed forms are written here from the papers, independently of the implementation: the
clip status, the entropy gates (torch.quantile per response) and the covariance selections are
recomputed in the test, not read from the code under test.
"""

import pytest
import torch

from rlvr_explore import losses
from rlvr_explore.candidates import token_stats

B, T, V, N = 6, 7, 11, 3
EPS = 0.2


def make_batch(seed=0, temperature=1.0, ratio_noise=0.3):
    g = torch.Generator().manual_seed(seed)
    logits = (2.0 * torch.randn(B, T, V, generator=g, dtype=torch.float64)).requires_grad_()
    probs = torch.softmax(logits.detach() / temperature, -1)
    ids = torch.multinomial(probs.reshape(-1, V), 1, generator=g).reshape(B, T)
    # make some sampled tokens the rank-1 candidate so the CaSP negative branch is exercised
    top1 = probs.argmax(-1)
    ids = torch.where(torch.rand(B, T, generator=g) < 0.5, top1, ids)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 5:] = False
    mask[3, 2:] = False
    stats = token_stats(logits, ids, top_n=N, temperature=temperature)
    old_logp = stats.logp.detach() + ratio_noise * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref_logp = stats.logp.detach() + 0.2 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv_seq = torch.tensor([1.3, -0.7, 0.4, -1.1, 0.9, -0.2], dtype=torch.float64)
    return dict(logits=logits, ids=ids, mask=mask, stats=stats, old_logp=old_logp, ref_logp=ref_logp,
                adv=adv_seq[:, None].expand(B, T), temperature=temperature)


def call(method, b, **hp):
    s = b["stats"]
    return losses.policy_loss(
        method, logp=s.logp, old_logp=b["old_logp"], advantages=b["adv"], response_mask=b["mask"],
        response_ids=b["ids"], topn_logp=s.topn_logp, topn_ids=s.topn_ids, entropy=s.entropy,
        ref_logp=b["ref_logp"], rewards=(b["adv"][:, 0] > 0).double(), **hp,
    )


def autograd_grad(method, b, **hp):
    loss, _ = call(method, b, **hp)
    (grad,) = torch.autograd.grad(loss, b["logits"], retain_graph=True)
    return grad


# ------------------------------------------------------------------ closed-form pieces


def agg_weights(mask, mode, max_len=None):
    m = mask.double()
    n_seq = (m.sum(-1) > 0).sum()
    if mode == "token-mean":
        return m / m.sum()
    if mode == "seq-mean-token-mean":
        return m / m.sum(-1, keepdim=True).clamp(min=1) / n_seq
    if mode == "seq-mean-token-sum":
        return m / n_seq
    return m / (n_seq * (max_len or mask.shape[-1]))


def policy(b):
    return torch.softmax(b["logits"].detach() / b["temperature"], -1)


def grad_logp(b, ids=None):
    """d log pi(y) / d z = (e_y - pi) / tau."""
    ids = b["ids"] if ids is None else ids
    return (torch.nn.functional.one_hot(ids, V).double() - policy(b)) / b["temperature"]


def active(ratio_value, adv, eps_low=EPS, eps_high=EPS):
    """1 where the clipped objective passes gradient, 0 where the clip is binding."""
    clipped = ((adv > 0) & (ratio_value > 1 + eps_high)) | ((adv < 0) & (ratio_value < 1 - eps_low))
    return (~clipped).double()


def ratio_of(b):
    return torch.exp(b["stats"].logp.detach() - b["old_logp"])


def response_gate(b, q=0.8):
    H = b["stats"].entropy.detach()
    gate = torch.zeros(B, T, dtype=torch.bool)
    for i in range(B):
        valid = b["mask"][i]
        gate[i, valid] = H[i, valid] > torch.quantile(H[i, valid], q)
    return gate


def batch_gate(b, q=0.8):
    H = b["stats"].entropy.detach()
    return (H > torch.quantile(H[b["mask"]], q)) & b["mask"]


def clipped_pg_closed_form(b, keep=None, mode="seq-mean-token-mean", eps_high=EPS):
    r, A = ratio_of(b), b["adv"]
    coef = agg_weights(b["mask"], mode) * (-A * r) * active(r, A, EPS, eps_high)
    if keep is not None:
        coef = coef * keep
    return coef[..., None] * grad_logp(b)


def assert_close(actual, expected):
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ the clipped family


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_grpo_gradient_every_aggregation(mode):
    b = make_batch(1)
    assert_close(autograd_grad("grpo", b, loss_agg_mode=mode), clipped_pg_closed_form(b, mode=mode))


def test_some_tokens_are_clipped_in_the_fixture():
    b = make_batch(1)
    inactive = (active(ratio_of(b), b["adv"]) == 0) & b["mask"]
    assert 0 < inactive.sum() < b["mask"].sum()


@pytest.mark.parametrize("method,mode,eps_high", [
    ("dr_grpo", "seq-mean-token-sum-norm", EPS), ("dapo", "token-mean", 0.28), ("w_reinforce", "token-mean", EPS),
])
def test_clipped_variants(method, mode, eps_high):
    b = make_batch(2)
    assert_close(autograd_grad(method, b), clipped_pg_closed_form(b, mode=mode, eps_high=eps_high))


@pytest.mark.parametrize("method,sign,mode", [
    ("psr", 1, "token-mean"), ("nsr", -1, "token-mean"), ("grpo_n", -1, "seq-mean-token-mean"),
])
def test_sign_filtered_losses(method, sign, mode):
    b = make_batch(3)
    keep = (b["adv"] * sign > 0).double()
    assert_close(autograd_grad(method, b), clipped_pg_closed_form(b, keep=keep, mode=mode))


def test_dr_grpo_uses_constant_length_divisor():
    b = make_batch(4)
    got = autograd_grad("dr_grpo", b, max_response_length=50)
    r, A = ratio_of(b), b["adv"]
    coef = agg_weights(b["mask"], "seq-mean-token-sum-norm", max_len=50) * (-A * r) * active(r, A)
    assert_close(got, coef[..., None] * grad_logp(b))


# ------------------------------------------------------------------ GSPO


@pytest.mark.parametrize("method", ["gspo", "gspo_n"])
def test_gspo_sequence_ratio_gradient(method):
    b = make_batch(5, ratio_noise=1e-3)  # the GSPO clip (3e-4 / 4e-4) binds for some sequences
    m = b["mask"].double()
    log_s = ((b["stats"].logp.detach() - b["old_logp"]) * m).sum(-1) / m.sum(-1)
    s = torch.exp(log_s)[:, None].expand(B, T)
    A = b["adv"]
    coef = agg_weights(b["mask"], "seq-mean-token-mean") * (-A * s) * active(s, A, 3e-4, 4e-4)
    if method == "gspo_n":
        coef = coef * (A < 0)
    assert_close(autograd_grad(method, b), coef[..., None] * grad_logp(b))
    assert 0 < (active(s, A, 3e-4, 4e-4)[:, 0] == 0).sum() < B


# ------------------------------------------------------------------ CaSP


def casp_closed_form(b, alpha, lam, q=0.8, softmax_weights=False, gate=None):
    """dL/dz per token (L is the loss, the negative of the objective), CaSP §4 / App. A."""
    r, A = ratio_of(b), b["adv"]
    w = (response_gate(b, q) if gate is None else gate).double()
    pi = policy(b)
    top_ids = pi.topk(N, -1).indices
    g_y = grad_logp(b)
    g_top = torch.stack([grad_logp(b, top_ids[..., n]) for n in range(N)], -2)  # (B, T, N, V)
    if softmax_weights:
        c = torch.softmax(torch.log(pi.gather(-1, top_ids)), -1)
    else:
        c = torch.full((B, T, N), 1.0 / N, dtype=torch.float64)
    smoothed = (1 - alpha * w)[..., None] * g_y + (alpha * w)[..., None] * (c[..., None] * g_top).sum(-2)
    is_top1 = b["ids"] == top_ids[..., 0]
    penalised = (A < 0) & is_top1 & (w > 0)
    positive = A > 0
    ratio_value = torch.where(penalised, lam * r, r)
    scale = torch.where(penalised, lam * r, r)
    direction = torch.where(positive[..., None], smoothed, g_y)
    coef = agg_weights(b["mask"], "seq-mean-token-mean") * (-A * scale) * active(ratio_value, A)
    return coef[..., None] * direction


@pytest.mark.parametrize("alpha,lam", [(0.01, 1.1), (0.3, 1.5), (1.0, 2.0)])
def test_casp_gradient_matches_paper(alpha, lam):
    b = make_batch(6)
    assert_close(autograd_grad("casp", b, alpha=alpha, lam=lam), casp_closed_form(b, alpha, lam))


def test_casp_fixture_exercises_every_branch():
    b = make_batch(6)
    w = response_gate(b)
    pi = policy(b)
    is_top1 = b["ids"] == pi.argmax(-1)
    A = b["adv"]
    assert ((A > 0) & w).any() and ((A < 0) & w & is_top1).any() and ((A < 0) & w & ~is_top1).any()


def test_casp_softmax_weights():
    b = make_batch(7)
    expected = casp_closed_form(b, 0.4, 1.3, softmax_weights=True)
    assert_close(autograd_grad("casp_softmax", b, alpha=0.4, lam=1.3), expected)


def test_simko_is_casp():
    b = make_batch(8)
    assert_close(autograd_grad("simko", b, alpha=0.2), autograd_grad("casp", b, alpha=0.2))


def test_casp_batch_quantile_option():
    b = make_batch(9)
    got = autograd_grad("casp", b, alpha=0.5, lam=1.2, quantile_scope="batch")
    assert_close(got, casp_closed_form(b, 0.5, 1.2, gate=batch_gate(b)))


def test_casp_with_alpha_zero_and_lam_one_is_grpo():
    b = make_batch(10)
    assert_close(autograd_grad("casp", b, alpha=0.0, lam=1.0), autograd_grad("grpo", b))


def test_casp_positive_on_reward():
    b = make_batch(11)
    b["adv"] = b["adv"].clone()
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # row 4 has A > 0, reward 0
    s = b["stats"]
    kwargs = dict(logp=s.logp, old_logp=b["old_logp"], advantages=b["adv"], response_mask=b["mask"],
                  response_ids=b["ids"], topn_logp=s.topn_logp, topn_ids=s.topn_ids, entropy=s.entropy,
                  rewards=rewards, alpha=0.5)
    by_reward, _ = losses.policy_loss("casp", positive_on="reward", **kwargs)
    by_adv, _ = losses.policy_loss("casp", **kwargs)
    g_reward = torch.autograd.grad(by_reward, b["logits"], retain_graph=True)[0]
    g_adv = torch.autograd.grad(by_adv, b["logits"], retain_graph=True)[0]
    assert_close(g_reward[[0, 2]], g_adv[[0, 2]])  # reward 1 and A > 0: both smooth
    assert not torch.allclose(g_reward[4], g_adv[4])  # A > 0 but reward 0: only the advantage key smooths
    assert_close(g_reward[4], clipped_pg_closed_form(b)[4])


# ------------------------------------------------------------------ entropy-gated and covariance losses


def test_forking_batch_top20_percent():
    b = make_batch(12)
    keep = batch_gate(b).double()
    assert_close(autograd_grad("forking", b), clipped_pg_closed_form(b, keep=keep))


def covariance_top_k(b, ratio_k):
    mask = b["mask"]
    A, lp = b["adv"][mask], b["stats"].logp.detach()[mask]
    cov = (A - A.mean()) * (lp - lp.mean())
    k = max(1, int(mask.sum() * ratio_k))
    chosen_flat = torch.zeros_like(cov, dtype=torch.bool)
    chosen_flat[torch.argsort(cov, descending=True)[:k]] = True
    chosen = torch.zeros(B, T, dtype=torch.bool)
    chosen[mask] = chosen_flat
    return chosen


def test_kl_cov_gradient():
    b = make_batch(13)
    sel = covariance_top_k(b, 0.1).double()
    r, A = ratio_of(b), b["adv"]
    sign = torch.sign(b["stats"].logp.detach() - b["old_logp"])
    coef = agg_weights(b["mask"], "seq-mean-token-mean") * (-A * r + sel * 0.7 * sign)
    got = autograd_grad("kl_cov", b, kl_cov_ratio=0.1, kl_cov_coef=0.7)
    assert_close(got, coef[..., None] * grad_logp(b))
    assert sel.sum() == 3  # int(35 valid tokens * 0.1)


def test_clip_cov_zeroes_selected_tokens_only():
    b = make_batch(14)
    s = b["stats"]
    torch.manual_seed(0)
    gate = losses.token_gate(
        "clip_cov", logp=s.logp, old_logp=b["old_logp"], advantages=b["adv"], response_mask=b["mask"],
        clip_cov_ratio=0.05, clip_cov_lb=-10.0, clip_cov_ub=10.0,
    )
    assert gate.sum() == max(1, int(b["mask"].sum() * 0.05))
    assert not (gate & (active(ratio_of(b), b["adv"], 1.0, 1.0) == 0)).any()  # never picks an already clipped token
    got = autograd_grad("clip_cov", b, token_gate=gate, clip_cov_ratio=0.05)
    r, A = ratio_of(b), b["adv"]
    # the official recipes' clip range 1 / 1 (ratio in [0, 2])
    coef = agg_weights(b["mask"], "seq-mean-token-mean") * (-A * r) * active(r, A, 1.0, 1.0) * ~gate
    assert_close(got, coef[..., None] * grad_logp(b))
    assert_close(autograd_grad("clip_cov", b, token_gate=gate, clip_eps_low=EPS, clip_eps_high=EPS),
                 clipped_pg_closed_form(b, keep=(~gate).double()))


def test_clip_cov_selection_respects_bounds():
    b = make_batch(15)
    s = b["stats"]
    mask = b["mask"]
    A, lp = b["adv"], s.logp.detach()
    cov = (A - A[mask].mean()) * (lp - lp[mask].mean())
    lb, ub = float(cov[mask].quantile(0.3)), float(cov[mask].quantile(0.7))
    gate = losses.token_gate(
        "clip_cov", logp=s.logp, old_logp=b["old_logp"], advantages=A, response_mask=mask,
        clip_cov_ratio=0.5, clip_cov_lb=lb, clip_cov_ub=ub,
    )
    assert gate.any() and ((cov[gate] > lb) & (cov[gate] < ub)).all()


# ------------------------------------------------------------------ options that combine with any loss


@pytest.mark.parametrize("method", ["grpo", "casp", "dapo", "gspo"])
def test_entropy_bonus_and_kl_add_their_closed_forms(method):
    b = make_batch(16)
    base = autograd_grad(method, b)
    mode = losses.get_method(method).defaults.get("loss_agg_mode", "seq-mean-token-mean")
    c = agg_weights(b["mask"], mode)
    pi = policy(b)
    H = b["stats"].entropy.detach()
    # d(-coef * H)/dz = coef * pi (log pi + H)
    entropy_term = (c * 0.05)[..., None] * pi * (torch.log(pi) + H[..., None])
    kl_term = (c * 0.3 * (1 - torch.exp(b["ref_logp"] - b["stats"].logp.detach())))[..., None] * grad_logp(b)
    got = autograd_grad(method, b, entropy_coeff=0.05, kl_coef=0.3)
    assert_close(got, base + entropy_term + kl_term)


def test_temperature_scales_gradient():
    b = make_batch(17, temperature=0.6)
    assert_close(autograd_grad("grpo", b), clipped_pg_closed_form(b))
    assert_close(autograd_grad("casp", b, alpha=0.3), casp_closed_form(b, 0.3, 1.1))


# ------------------------------------------------------------------ exactness against verl's formulas


def test_dual_clip_matches_verls_formula_and_is_off_by_default():
    b = make_batch(18, ratio_noise=1.5)
    r, A = ratio_of(b), b["adv"]
    beyond = (A < 0) & (r > 3.0) & b["mask"]
    assert beyond.any(), "the fixture must have A < 0 tokens with r > c"
    coef = agg_weights(b["mask"], "seq-mean-token-mean") * (-A * r) * active(r, A)
    # verl: where A < 0, loss = min(max(-A r, -A clip(r)), -A c); past r = c the loss is the constant -A c
    assert_close(autograd_grad("grpo", b, clip_ratio_c=3.0), (coef * ~beyond)[..., None] * grad_logp(b))
    assert_close(autograd_grad("grpo", b), coef[..., None] * grad_logp(b))
    loss_mat, _ = losses.policy_token_loss("grpo", logp=b["stats"].logp, old_logp=b["old_logp"], advantages=A,
                                            response_mask=b["mask"], clip_ratio_c=3.0)[0:2]
    clipped = torch.maximum(-A * r, -A * r.clamp(1 - EPS, 1 + EPS))
    expected = torch.where(A < 0, torch.minimum(clipped, -A * 3.0), clipped)
    torch.testing.assert_close(loss_mat.detach(), expected)


def test_dual_clip_must_exceed_one():
    b = make_batch(18)
    with pytest.raises(ValueError, match="clip_ratio_c must be > 1"):
        call("grpo", b, clip_ratio_c=1.0)


def test_k3_kl_follows_verls_low_var_kl_with_a_finite_gradient_far_from_the_reference():
    logp = torch.tensor([-120.0, -30.0, -1.0, -0.5, 0.0], requires_grad=True)
    ref = torch.tensor([0.0, 0.0, -1.2, -0.4, -90.0])
    kl = losses.k3_kl(logp, ref)
    (grad,) = torch.autograd.grad(kl.sum(), logp)
    assert torch.isfinite(grad).all()
    d = (ref - logp.detach()).clamp(-20, 20)  # verl's kl_penalty('low_var_kl')
    torch.testing.assert_close(kl.detach(), (d.exp() - d - 1).clamp(-10, 10))
    # inside both clamps d/dlogp = 1 - exp(d); outside either, 0
    inside = ((ref - logp.detach()).abs() < 20) & ((d.exp() - d - 1).abs() < 10)
    torch.testing.assert_close(grad, torch.where(inside, 1 - d.exp(), torch.zeros_like(d)))


@pytest.mark.parametrize("method,scope", [("casp", "response"), ("casp", "batch"), ("forking", "batch")])
def test_entropy_gates_compute_in_float64(method, scope):
    # 0.7 sits on the median; in float32 the threshold 0.69999998 would let it through the strict '>'
    entropy = torch.tensor([[0.1, 0.5, 0.7, 0.9, 1.1]] * 2, dtype=torch.float64)
    mask = torch.ones_like(entropy, dtype=torch.bool)
    zeros = torch.zeros_like(entropy)
    gate = losses.token_gate(method, logp=zeros, old_logp=zeros, advantages=zeros, response_mask=mask,
                             entropy=entropy, q=0.5, quantile_scope=scope)
    threshold = torch.quantile(entropy if scope == "response" else entropy.reshape(-1), 0.5, dim=-1, keepdim=True)
    assert torch.equal(gate, entropy > threshold)
    assert not gate[:, 2].any()


def test_covariance_keeps_float64():
    from rlvr_explore.losses.cov import token_covariance
    values = torch.tensor([[1.0 + 1e-12, 1.0, 2.0]], dtype=torch.float64)
    cov = token_covariance(values, values, torch.ones(1, 3, dtype=torch.bool))
    assert cov.dtype == torch.float64
    expected = (values - values.mean()) ** 2
    torch.testing.assert_close(cov, expected, rtol=0, atol=1e-15)
