"""DPH-RL (arXiv 2509.07430): the rehearsal divergences against their closed forms and the
specification's worked examples, their gradient on the logits, and the trainer's data split,
rehearsal term and resume; `rlvr-explore dph-prepare`, which builds the same data for verl."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

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
    # pi_0 solved each rehearsed prompt in both samples; one correct response per prompt is kept, as the official set
    assert stats["dph_rehearsal_responses"] == len(trainer.rehearsal.texts) == stats["dph_rehearsed_prompts"] > 0
    train = [r for r in records if r["kind"] == "train"]
    assert all(r["dph_rehearsal_loss"] >= 0 for r in train) and train[-1]["dph_rehearsal_loss"] > 0  # pi moved off pi_0
    saved = (trainer.out / "rehearsal.pt").stat().st_mtime_ns
    cfg.train.steps = 3
    resumed = rl.RLTrainer(cfg, resume=True, accept_changes=True)  # the same rehearsal set, not sampled again
    assert resumed.rehearsal.texts == trainer.rehearsal.texts and resumed.train_problems == trainer.train_problems
    assert (trainer.out / "rehearsal.pt").stat().st_mtime_ns == saved
    resumed.run()


def test_dph_prepare_splits_a_verl_parquet_and_stores_pi0s_log_probs(tmp_path, caplog):
    """`rlvr-explore dph-prepare` on a verl training file and a saved tiny policy, with a verl-style
    reward function that masters a known set of prompts: rl.parquet is the file less those rows,
    columns unchanged; rehearsal.pt holds every sample of the mastered prompts with pi_0's
    log-probs at the temperature, recomputed here by a plain forward pass."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlvr_explore.cli import main
    from rlvr_explore.integrations.verl import load_rehearsal_set
    from rlvr_explore.models import char_tokenizer, tiny_gpt2

    tokenizer = char_tokenizer("0123456789+=: ")
    tokenizer.chat_template = ("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %}={% endif %}")  # a BOS as in Llama's template
    tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2, seed=3).save_pretrained(tmp_path / "pi0")
    tokenizer.save_pretrained(tmp_path / "pi0")
    truths = ["always", "never", "always", "raise", "never"]
    rows = [{"data_source": "toy", "prompt": [{"role": "user", "content": f"{i}+{i}"}],
             "reward_model": {"style": "rule", "ground_truth": truth}, "extra_info": {"index": i}}
            for i, truth in enumerate(truths)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    (tmp_path / "reward.py").write_text(
        "def score(data_source, solution_str, ground_truth, extra_info):\n"
        "    if ground_truth == 'raise':\n        raise KeyError('no answer')\n"
        "    return {'score': float(ground_truth == 'always'), 'acc': ground_truth == 'always'}\n")

    code = main(["dph-prepare", "--train-file", str(tmp_path / "train.parquet"), "--model", str(tmp_path / "pi0"),
                 "--out", str(tmp_path / "dph"), "--reward-function", f"{tmp_path / 'reward.py'}:score",
                 "--presample", "2", "--samples", "3", "--keep-per-prompt", "0", "--temperature", "0.7",
                 "--max-new-tokens", "4"])
    assert code == 0
    assert "the reward function raised 2 times (scored 0); first: KeyError('no answer')" in caplog.text  # 2 pre-samples
    assert pq.read_table(tmp_path / "dph" / "rl.parquet").to_pylist() == [rows[1], rows[3], rows[4]]
    summary = json.loads((tmp_path / "dph" / "dph_prepare.json").read_text())
    assert (summary["dph_rehearsed_prompts"], summary["dph_rl_prompts"], summary["dph_rehearsal_responses"]) == (2, 3, 6)

    rehearsal = load_rehearsal_set(str(tmp_path / "dph" / "rehearsal.pt"))
    assert len(rehearsal["ref_logp"]) == 6
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "pi0")
    prompts = []
    for i in range(6):
        prompt = rehearsal["prompt_ids"][i][rehearsal["prompt_mask"][i]]
        response = rehearsal["response_ids"][i][rehearsal["response_mask"][i]]
        prompts.append(tokenizer.decode(prompt))
        with torch.no_grad():
            logits = model(torch.cat([prompt, response])[None]).logits[0] / 0.7
        expected = torch.log_softmax(logits, -1)[len(prompt) - 1 : -1].gather(1, response[:, None]).squeeze(1)
        torch.testing.assert_close(rehearsal["ref_logp"][i][: len(response)], expected, atol=1e-4, rtol=1e-4)
    assert sorted(prompts) == ["<bos>0+0="] * 3 + ["<bos>2+2="] * 3  # the chat template, one BOS


def test_the_rehearsal_set_keeps_the_first_correct_responses_of_each_prompt():
    from rlvr_explore.losses.rehearsal import kept_correct

    correct = torch.tensor([[0, 1, 1, 0, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    assert kept_correct(correct, 1).long().tolist() == [[0, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0] * 5]
    assert kept_correct(correct, 2).long().tolist() == [[0, 1, 1, 0, 0], [1, 1, 0, 0, 0], [0] * 5]
    assert torch.equal(kept_correct(correct, 0), correct)  # 0: every correct response


def test_dph_prepare_says_what_is_wrong_with_its_input(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlvr_explore.cli import main
    from rlvr_explore.integrations.verl_rehearsal import chat_text, load_reward_function
    from rlvr_explore.models import char_tokenizer

    assert main(["dph-prepare", "--train-file", str(tmp_path / "none.parquet"), "--model", "m", "--out", "o"]) == 2
    assert "--train-file: " in capsys.readouterr().err
    pq.write_table(pa.Table.from_pylist([{"question": "1+1"}]), tmp_path / "q.parquet")
    assert main(["dph-prepare", "--train-file", str(tmp_path / "q.parquet"), "--model", "m", "--out", "o"]) == 2
    assert "no 'prompt' column" in capsys.readouterr().err
    with pytest.raises(ValueError, match="row 3 'prompt': chat messages, but the tokenizer has no chat template"):
        chat_text([{"role": "user", "content": "1"}], char_tokenizer("1"), "row 3 'prompt'")
    with pytest.raises(ValueError, match="expected a string or a list of"):
        chat_text({"content": "1"}, char_tokenizer("1"), "row 0 'prompt'")
    (tmp_path / "r.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="defines no function 'score'"):
        load_reward_function(f"{tmp_path / 'r.py'}:score")
    with pytest.raises(ValueError, match="expected FILE:NAME"):
        load_reward_function("reward.py")
