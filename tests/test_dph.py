"""DPH-RL (arXiv 2509.07430): the rehearsal divergences against their closed forms and the
specification's worked examples, their gradient on the logits, and the trainer's data split,
rehearsal term and resume."""

import math

import pytest
import torch

from rlvr_explore.losses.rehearsal import rehearsal_loss, rehearsal_token_divergence


@pytest.mark.parametrize("p,p0,forward,forward_grad,js,js_grad", [
    (0.5, 0.25, 0.3069, 1.0, 0.1699, 0.5754), (0.25, 0.5, 0.1931, -0.5, 0.0849, -0.2027), (0.3, 0.3, 0, 0, 0, 0)])
def test_divergences_worked_example(p, p0, forward, forward_grad, js, js_grad):
    for divergence, value, grad in (("forward", forward, forward_grad), ("js", js, js_grad)):
        logp = torch.tensor([math.log(p)], dtype=torch.float64, requires_grad=True)
        f = rehearsal_token_divergence(logp, torch.tensor([math.log(p0)], dtype=torch.float64), divergence)
        f.sum().backward()
        assert f.item() == pytest.approx(value, abs=1e-4) and logp.grad.item() == pytest.approx(grad, abs=1e-4)


def test_alpha_divergence_closed_form_and_its_limits():
    u = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    logp = u.log().requires_grad_()
    f = rehearsal_token_divergence(logp, torch.zeros(3, dtype=torch.float64), "alpha", alpha=0.2)
    f.sum().backward()
    expected = (u ** 0.8 - 0.8 * u - 0.2) / (0.2 * -0.8)
    assert f.tolist() == pytest.approx(expected.tolist()) and abs(f[1]) < 1e-12 and (f > -1e-12).all()
    assert logp.grad.tolist() == pytest.approx((u * (0.8 * u ** -0.2 - 0.8) / -0.16).tolist())  # u f'(u)
    with pytest.raises(ValueError, match="0 < alpha < 1"):
        rehearsal_token_divergence(logp, logp, "alpha", alpha=1.0)
    huge = rehearsal_token_divergence(torch.tensor([0.0]), torch.tensor([-500.0]), "forward")
    assert huge.item() == 10.0  # verl's clamps: log u to [-20, 20], f to [-10, 10]


@pytest.mark.parametrize("divergence", ["forward", "js"])
def test_gradient_on_the_logits_is_the_closed_form(divergence):
    # d/dz of coef * mean_t f(u_t), u_t = pi(y_t) / pi_0(y_t): coef / tokens * f'(u) u (onehot - softmax)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.float64, generator=g, requires_grad=True)
    tokens = torch.randint(0, 7, (2, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    ref = torch.log_softmax(torch.randn(2, 5, 7, dtype=torch.float64, generator=g), -1).gather(-1, tokens[..., None])[..., 0]
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]
    rehearsal_loss(logp, ref, mask, coef=0.05, divergence=divergence).backward()
    u = (logp - ref).exp().detach()
    slope = u - 1 if divergence == "forward" else u * torch.log(2 * u / (u + 1))  # df/dlogp
    onehot = torch.nn.functional.one_hot(tokens, 7).double()
    expected = 0.05 / mask.sum() * (slope * mask)[..., None] * (onehot - torch.softmax(logits.detach(), -1))
    torch.testing.assert_close(logits.grad, expected)


class SolvesSomePrompts:
    """A verifier that calls every response to a prompt starting with '1'..'4' correct, others wrong."""

    stats = {}

    def __call__(self, problems, texts):
        return [float(p["prompt"][0] in "1234") for p in problems]

    def close(self):
        pass


def test_the_trainer_splits_the_prompts_rehearses_and_resumes_alike(tiny_config, monkeypatch):
    from rlvr_explore.train import rl
    from rlvr_explore.train.runtime import read_metrics

    monkeypatch.setattr(rl, "make_verifier", lambda cfg: SolvesSomePrompts())
    cfg = tiny_config("dph.enabled=true", "dph.presample=2", "dph.samples=2", "dph.chunk=6", "train.save_every=1",
                      "dph.coef=0.5")
    trainer = rl.RLTrainer(cfg)
    solved = lambda prompt: prompt[0] in "1234"  # noqa: E731
    assert trainer.train_problems and not any(solved(p["prompt"]) for p in trainer.train_problems)
    assert trainer.rehearsal is not None and all(solved(prompt) for prompt in trainer.rehearsal.prompts)
    trainer.run()
    records = read_metrics(cfg.run.out_dir)
    stats = next(r for r in records if r["kind"] == "dph")
    assert stats["dph_rehearsal_responses"] == len(trainer.rehearsal.texts) == 2 * stats["dph_rehearsed_prompts"]
    train = [r for r in records if r["kind"] == "train"]
    assert all(r["dph_rehearsal_loss"] >= 0 for r in train) and train[-1]["dph_rehearsal_loss"] > 0  # pi moved off pi_0
    saved = (trainer.out / "rehearsal.pt").stat().st_mtime_ns
    cfg.train.steps = 3
    resumed = rl.RLTrainer(cfg, resume=True, accept_changes=True)  # the same rehearsal set, not sampled again
    assert resumed.rehearsal.texts == trainer.rehearsal.texts and resumed.train_problems == trainer.train_problems
    assert (trainer.out / "rehearsal.pt").stat().st_mtime_ns == saved
    resumed.run()
