"""The TRL integration on CPU with a tiny local model: every loss trains, metrics are logged, and
the trainer's loss equals rlvr_explore.losses.policy_loss on identical tensors."""

import os
import types

import pytest
import torch

trl = pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402

from rlvr_explore import losses  # noqa: E402
from rlvr_explore.candidates import token_stats  # noqa: E402
from rlvr_explore.integrations.trl import ExploreGRPOConfig, ExploreGRPOTrainer  # noqa: E402
from rlvr_explore.models import char_tokenizer, tiny_gpt2  # noqa: E402
from rlvr_explore.tasks import characters, generate  # noqa: E402
from rlvr_explore.tasks.synthetic import verify_countdown  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    """A tiny GPT-2 and char tokenizer saved to disk, loaded by path as a user's model would be."""
    path = tmp_path_factory.mktemp("model")
    tokenizer = char_tokenizer(characters())
    tiny_gpt2(len(tokenizer), n_layer=1, n_embd=32, n_head=2).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path), tokenizer


def countdown_reward(prompts, completions, **kwargs):
    return [verify_countdown(p, c) for p, c in zip(prompts, completions)]


def lucky_reward(prompts, completions, **kwargs):
    """Varied rewards for an untrained model, so advantages are not all zero."""
    return [float(len(c) % 2) for c in completions]


def make_trainer(local_model, tmp_path, method, answer_fn=None, **config):
    path, tokenizer = local_model
    dataset = Dataset.from_list([{"prompt": p["prompt"]} for p in generate("countdown", 16, seed=0)])
    args = ExploreGRPOConfig(output_dir=str(tmp_path / "out"), method=method, per_device_train_batch_size=8,
                             num_generations=4, max_completion_length=8, max_steps=2, logging_steps=1, report_to=[],
                             use_cpu=True, **{"save_strategy": "no", "seed": 0, **config})
    return ExploreGRPOTrainer(model=path, reward_funcs=[countdown_reward, lucky_reward], args=args,
                              train_dataset=dataset, processing_class=tokenizer, answer_fn=answer_fn)


@pytest.mark.parametrize("method", sorted(losses.LOSSES))
def test_every_loss_trains_through_trl(local_model, tmp_path, method):
    trainer = make_trainer(local_model, tmp_path, method, beta=0.01)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    logged = [h for h in trainer.state.log_history if "explore/lambda1" in h]
    assert len(logged) == 2
    trl_keys = {"entropy", "kl", "clip_ratio/low_mean", "clip_ratio/high_max", "clip_ratio/region_mean"}  # TRL's own
    ours = {"explore/lambda1", "explore/lambda3", "explore/zero_advantage_frac"} | (
        set() if method == "grpo" else {"explore/loss", "explore/kl"})
    assert trl_keys | ours <= set(logged[0])
    if method in ("casp", "casp_softmax", "simko"):
        assert "explore/gated_entropy" in logged[0]
    moved = sum(float((p.detach() - b).abs().sum()) for p, b in zip(trainer.model.parameters(), before))
    assert moved > 0


def casp_batch(vocab: int) -> dict:
    """A batch as TRL hands it to the loss: 8 completions of 5 tokens after 6-token prompts."""
    g = torch.Generator().manual_seed(0)
    B, P, T, V = 8, 6, 5, vocab
    prompt_ids = torch.randint(3, V, (B, P), generator=g)
    completion_ids = torch.randint(3, V, (B, T), generator=g)
    completion_mask = torch.ones(B, T, dtype=torch.long)
    completion_mask[2, 3:] = 0
    return {
        "prompt_ids": prompt_ids, "prompt_mask": torch.ones(B, P, dtype=torch.long),
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0, 2.0, -2.0, 0.3]),
        "old_per_token_logps": None,
        "ref_per_token_logps": -3.0 + 0.1 * torch.randn(B, T, generator=g),
    }


def test_trl_loss_equals_core_loss_on_identical_tensors(local_model, tmp_path):
    trainer = make_trainer(local_model, tmp_path, "casp", casp_alpha=0.3, casp_lam=1.4, beta=0.02)
    model = trainer.model
    inputs = casp_batch(model.config.vocab_size)
    prompt_ids, completion_ids, completion_mask = inputs["prompt_ids"], inputs["completion_ids"], inputs["completion_mask"]
    (B, P), T = prompt_ids.shape, completion_ids.shape[1]
    model.train()
    trl_loss = trainer._compute_loss(model, inputs)

    # independently: the full logits of a plain forward, then the core functions
    logits = model(input_ids=torch.cat([prompt_ids, completion_ids], 1)).logits[:, P - 1 : P - 1 + T]
    stats = token_stats(logits, completion_ids, top_n=3, temperature=trainer.temperature)
    core_loss, _ = losses.policy_loss(
        "casp", logp=stats.logp, old_logp=stats.logp.detach(), advantages=inputs["advantages"],
        response_mask=completion_mask.bool(), response_ids=completion_ids, topn_logp=stats.topn_logp,
        topn_ids=stats.topn_ids, entropy=stats.entropy, ref_logp=inputs["ref_per_token_logps"], kl_coef=0.02,
        alpha=0.3, lam=1.4, num_seqs=B * trainer.args.gradient_accumulation_steps)
    torch.testing.assert_close(trl_loss, core_loss, rtol=1e-5, atol=1e-6)
    assert abs(float(core_loss)) > 1e-4


def test_casp_through_trl_takes_the_fused_kernels_where_they_serve(local_model, tmp_path, monkeypatch,
                                                                   kernel_calls):
    """On CUDA ``token_stats`` runs the Triton kernels of ``rlvr_explore.fused`` (forced here, under
    Triton's interpreter): the subclass's CaSP loss reaches them forward and backward, with the
    loss and gradients of the block path."""
    from rlvr_explore import candidates

    # float32 logits (TRL autocasts to bf16 by default, even on a CPU), so the two paths agree to float32's tolerance
    trainer = make_trainer(local_model, tmp_path, "casp", casp_alpha=0.3, casp_lam=1.4, bf16=False)
    model, inputs = trainer.model, casp_batch(trainer.model.config.vocab_size)
    model.train()

    def loss_and_gradients(way):
        monkeypatch.setattr(candidates, "FUSED", way)
        model.zero_grad()
        loss = trainer._compute_loss(model, inputs)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    blocks_loss, blocks_grads = loss_and_gradients("never")
    assert kernel_calls == []
    kernels_loss, kernels_grads = loss_and_gradients("always")
    assert kernel_calls == ["forward", "backward"]
    torch.testing.assert_close(kernels_loss, blocks_loss)
    for a, b in zip(kernels_grads, blocks_grads):
        torch.testing.assert_close(a, b)


def test_unknown_method_fails_at_config_time(tmp_path):
    with pytest.raises(ValueError, match="unknown policy loss 'cassp'; available"):
        ExploreGRPOConfig(output_dir=str(tmp_path), method="cassp", report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        ExploreGRPOConfig(output_dir=str(tmp_path), method="casp", casp_alpha=2.0, report_to=[], use_cpu=True)


def test_swapping_the_import_alone_changes_nothing(tmp_path):
    args = ExploreGRPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    assert args.method == "grpo"
    with pytest.raises(ValueError, match=r"\['casp_alpha'\] would have no effect with method='grpo' \(TRL's own loss"):
        ExploreGRPOConfig(output_dir=str(tmp_path), casp_alpha=0.3, report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match=r"\['kl_cov_ratio'\] would have no effect with method='casp'"):
        ExploreGRPOConfig(output_dir=str(tmp_path), method="casp", kl_cov_ratio=0.1, report_to=[], use_cpu=True)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo"])
def test_method_grpo_reproduces_trl_for_each_loss_type(local_model, tmp_path, loss_type):
    """Plain GRPOTrainer and ExploreGRPOTrainer (method left out) on identical tensors: the same
    loss and the same gradient for every parameter. In float32: under TRL's default bf16 autocast
    the two agree to bf16 rounding (our statistics are computed in float32)."""
    path, tokenizer = local_model
    dataset = Dataset.from_list([{"prompt": p["prompt"]} for p in generate("countdown", 8, seed=0)])
    common = dict(per_device_train_batch_size=8, num_generations=4, max_completion_length=8, report_to=[],
                  use_cpu=True, save_strategy="no", seed=0, loss_type=loss_type, beta=0.02, bf16=False)
    trainers = [cls(model=path, reward_funcs=[countdown_reward], processing_class=tokenizer, train_dataset=dataset,
                    args=config(output_dir=str(tmp_path / cls.__name__), **common))
                for cls, config in ((trl.GRPOTrainer, trl.GRPOConfig), (ExploreGRPOTrainer, ExploreGRPOConfig))]
    g = torch.Generator().manual_seed(0)
    B, P, T, V = 8, 6, 5, trainers[0].model.config.vocab_size
    completion_mask = torch.ones(B, T, dtype=torch.long)
    completion_mask[2, 3:] = 0
    inputs = {"prompt_ids": torch.randint(3, V, (B, P), generator=g), "prompt_mask": torch.ones(B, P, dtype=torch.long),
              "completion_ids": torch.randint(3, V, (B, T), generator=g), "completion_mask": completion_mask,
              "advantages": torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0, 2.0, -2.0, 0.3]),
              "old_per_token_logps": -2.5 + 0.3 * torch.randn(B, T, generator=g),
              "ref_per_token_logps": -3.0 + 0.1 * torch.randn(B, T, generator=g),
              "num_items_in_batch": completion_mask.sum()}
    results = []
    for trainer in trainers:
        trainer.current_gradient_accumulation_steps = 1  # set by TRL's training loop, which this test skips
        trainer.model.train()
        trainer.model.zero_grad()
        loss = trainer._compute_loss(trainer.model, dict(inputs))
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in trainer.model.parameters()]))
    (trl_loss, trl_grads), (our_loss, our_grads) = results
    assert abs(float(trl_loss)) > 1e-6
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-5, atol=1e-7)
    for ours, theirs in zip(our_grads, trl_grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)
    assert "explore/lambda1" in trainers[1]._metrics["train"]


@pytest.mark.parametrize("advantage,hp", [("maxrl", None), ("pkpo", {"pkpo_k": 2})])
def test_an_rlvr_estimator_replaces_trls_normalisation(local_model, tmp_path, advantage, hp):
    from rlvr_explore.advantages import compute_advantages

    trainer = make_trainer(local_model, tmp_path, "casp", advantage=advantage, advantage_hp=hp)
    seen, generate_and_score = [], trainer._generate_and_score_completions

    def spy(inputs):
        output = generate_and_score(inputs)
        seen.append((trainer._gathered_rewards.clone(), output["advantages"].clone()))
        return output

    trainer._generate_and_score_completions = spy
    trainer.train()
    assert seen
    for per_func, used in seen:
        rewards = per_func.nansum(dim=1)  # two reward functions of weight 1
        expected = compute_advantages(advantage, rewards, torch.arange(len(rewards)) // 4, torch.ones(len(rewards), 1),
                                      **(hp or {}))[:, 0]
        torch.testing.assert_close(used, expected)
    assert any((used != 0).any() for _, used in seen)


def test_advantage_settings_are_checked_at_config_time(tmp_path):
    with pytest.raises(ValueError, match="advantage='gtpoo' is not an estimator"):
        ExploreGRPOConfig(output_dir=str(tmp_path), advantage="gtpoo", use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match=r"advantage_shaping: unknown steps \['outcome'\]"):
        ExploreGRPOConfig(output_dir=str(tmp_path), advantage="grpo", advantage_shaping=["outcome"], use_cpu=True,
                          report_to=[])
    with pytest.raises(ValueError, match="advantage_hp: unknown key"):
        ExploreGRPOConfig(output_dir=str(tmp_path), advantage="pkpo", advantage_hp={"k": 2}, use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="no effect without advantage"):
        ExploreGRPOConfig(output_dir=str(tmp_path), advantage_shaping=["outcome_ucb"], use_cpu=True, report_to=[])


def old_policy_statistics(trainer, output):
    """The log-probs and entropy of the generated completions under the model as it is now (before
    the step's update), computed here from the logits without the trainer's code."""
    prompt_ids, completion_ids = output["prompt_ids"], output["completion_ids"]
    with torch.no_grad():
        logits = trainer.model(input_ids=torch.cat([prompt_ids, completion_ids], 1),
                               attention_mask=torch.cat([output["prompt_mask"], output["completion_mask"]], 1)).logits
    logp = torch.log_softmax(logits[:, prompt_ids.shape[1] - 1 : -1].double() / trainer.temperature, -1)
    token_logp = logp.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return token_logp, -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("method, advantage, hp, config", [
    ("grpo", "unlikeliness", {"unlikeliness_beta": 0.5}, {}),  # TRL's own loss with per-token advantages
    ("grpo", "unlikeliness", {"unlikeliness_beta": 0.5}, {"num_iterations": 2}),  # TRL's own old log-probs
    ("dapo", "gtpo", None, {}),
    ("casp", "grpo_s", {"gtpo_alpha2": 0.3}, {}),
])
def test_per_token_estimators_read_the_old_policy_through_trl(local_model, tmp_path, method, advantage, hp, config):
    from rlvr_explore.advantages import compute_advantages

    trainer = make_trainer(local_model, tmp_path, method, advantage=advantage, advantage_hp=hp, **config)
    seen, generate_and_score = [], trainer._generate_and_score_completions

    def spy(inputs):
        output = generate_and_score(inputs)
        seen.append((trainer._gathered_rewards.clone(), output, *old_policy_statistics(trainer, output)))
        return output

    trainer._generate_and_score_completions = spy
    trainer.train()
    assert seen
    for per_func, output, old_logp, entropy in seen:
        mask = output["completion_mask"]
        expected = compute_advantages(advantage, per_func.nansum(dim=1), torch.arange(len(mask)) // 4, mask,
                                      old_logp=old_logp, entropy=entropy, **(hp or {}))
        torch.testing.assert_close(output["advantages"], expected.float(), rtol=1e-4, atol=1e-5)
    assert any((output["advantages"] != 0).any() for _, output, _, _ in seen)


def first_character(example, completion):
    return completion.strip()[:1] or None


def test_outcome_exploration_counts_answers_across_steps_and_checkpoints(local_model, tmp_path):
    from rlvr_explore.advantages import ANSWER_COUNTS_FILE, compute_advantages, load_answer_counts

    settings = dict(advantage="grpo", advantage_shaping=["outcome_ucb", "outcome_batch"],
                    advantage_hp={"outcome_variant": "ucb_con", "outcome_b0": 0.5})
    with pytest.raises(ValueError, match="pass ExploreGRPOTrainer\\(..., answer_fn="):
        make_trainer(local_model, tmp_path, "grpo", **settings)
    trainer = make_trainer(local_model, tmp_path, "grpo", answer_fn=first_character, save_strategy="steps", save_steps=1,
                           **settings)
    seen, generate_and_score = [], trainer._generate_and_score_completions

    def spy(inputs):
        output = generate_and_score(inputs)
        texts = trainer.processing_class.batch_decode(output["completion_ids"], skip_special_tokens=True)
        seen.append((trainer._gathered_rewards.clone(), [e["prompt"] for e in inputs],
                     [first_character(e, t) for e, t in zip(inputs, texts)], output["advantages"].clone()))
        return output

    trainer._generate_and_score_completions = spy
    trainer.train()
    assert len(seen) == 2
    counts = {}  # the reference counts, built from the same answers
    for per_func, prompts, answers, used in seen:
        n = len(answers)
        expected = compute_advantages("grpo", per_func.nansum(dim=1), torch.arange(n) // 4, torch.ones(n, 1),
                                      shaping=settings["advantage_shaping"], answers=answers,
                                      prompt_ids=[f'"{p}"' for p in prompts], answer_counts=counts,
                                      **settings["advantage_hp"])[:, 0]
        torch.testing.assert_close(used, expected.float())
    assert trainer.answer_counts == counts and max(counts.values()) > 1  # the second step saw the first's answers
    last = tmp_path / "out" / "checkpoint-2"
    assert (last / ANSWER_COUNTS_FILE).exists() and load_answer_counts(str(last)) == counts
    resumed = make_trainer(local_model, tmp_path / "again", "grpo", answer_fn=first_character, **settings)
    before_generating, generate_again = [], resumed._generate_and_score_completions
    resumed._generate_and_score_completions = lambda inputs: (before_generating.append(dict(resumed.answer_counts)),
                                                               generate_again(inputs))[1]
    resumed.train(resume_from_checkpoint=str(last))
    assert (before_generating[0] if before_generating else resumed.answer_counts) == counts


def test_evaluation_reads_the_outcome_counts_but_never_adds_to_them(local_model, tmp_path):
    settings = dict(advantage="grpo", advantage_shaping=["outcome_ucb"], advantage_hp={"outcome_variant": "ucb_con"})
    trainer = make_trainer(local_model, tmp_path, "grpo", answer_fn=first_character, **settings)
    trainer.answer_counts[('"1+1"', "2")] = 3
    output = {"completion_ids": torch.tensor([[5, 6], [7, 8]])}
    inputs = [{"prompt": "1+1"}, {"prompt": "1+1"}]
    trainer.model.eval()
    evaluation = trainer._answers(inputs, output)
    assert evaluation["answer_counts"] == trainer.answer_counts and evaluation["answer_counts"] is not trainer.answer_counts
    trainer.model.train()
    assert trainer._answers(inputs, output)["answer_counts"] is trainer.answer_counts


def test_dph_settings_are_checked_at_config_time(tmp_path):
    with pytest.raises(ValueError, match=r"\['dph_coef'\] would have no effect without dph_divergence"):
        ExploreGRPOConfig(output_dir=str(tmp_path), dph_coef=0.05, use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="dph_divergence='kl': one of forward, js, alpha"):
        ExploreGRPOConfig(output_dir=str(tmp_path), dph_divergence="kl", use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="dph_alpha must be in"):
        ExploreGRPOConfig(output_dir=str(tmp_path), dph_divergence="alpha", dph_alpha=1.5, use_cpu=True, report_to=[])
    config = ExploreGRPOConfig(output_dir=str(tmp_path), dph_divergence="js", dph_samples=4, use_cpu=True, report_to=[])
    assert (config.dph().divergence, config.dph().samples, config.dph().coef) == ("js", 4, 0.01)


def solves_known_prompts(solved):
    """A reward that 'solves' exactly the prompts in ``solved`` and no other."""
    def reward(prompts, completions, **kwargs):
        return [1.0 if p in solved else 0.0 for p in prompts]
    return reward


def test_dph_rehearses_what_the_initial_policy_solves_through_trl(local_model, tmp_path):
    from rlvr_explore.losses.rehearsal import rehearsal_loss

    path, tokenizer = local_model
    problems = generate("countdown", 16, seed=0)
    solved = {p["prompt"] for p in problems[:5]}
    dataset = Dataset.from_list([{"prompt": p["prompt"]} for p in problems])
    args = ExploreGRPOConfig(output_dir=str(tmp_path / "out"), method="grpo", per_device_train_batch_size=8,
                             num_generations=4, max_completion_length=8, max_steps=2, logging_steps=1, report_to=[],
                             use_cpu=True, save_strategy="no", seed=0, dph_divergence="forward", dph_presample=2,
                             dph_samples=3, dph_chunk=6, dph_coef=0.5, bf16=False, learning_rate=0.05,
                             reward_weights=[1.0, 0.4])  # float32, so pi_0's log-probs can be checked to 1e-5
    # the lucky reward moves the policy on the RL prompts, but never lifts one above the solved threshold 0.5
    trainer = ExploreGRPOTrainer(model=path, reward_funcs=[solves_known_prompts(solved), lucky_reward], args=args,
                                 train_dataset=dataset, processing_class=tokenizer)
    initial = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    assert sorted(trainer.train_dataset["prompt"]) == sorted(p["prompt"] for p in problems[5:])  # RL on the rest
    data = trainer.rehearsal
    assert len(data["completion_ids"]) == 5  # every sample of a solved prompt is correct; one kept per prompt
    prompts = tokenizer.batch_decode(data["prompt_ids"], skip_special_tokens=True)
    assert set(prompts) == solved
    # the stored log-probs are pi_0's: recomputed here with the initial weights
    pi_0 = type(trainer.model).from_pretrained(path).eval()
    pi_0.load_state_dict(initial)
    stats = old_policy_statistics(types.SimpleNamespace(model=pi_0, temperature=trainer.temperature),
                                  {"prompt_ids": data["prompt_ids"], "prompt_mask": data["prompt_mask"],
                                   "completion_ids": data["completion_ids"], "completion_mask": data["completion_mask"]})
    mask = data["completion_mask"].bool()
    torch.testing.assert_close(data["ref_logp"][mask], stats[0].float()[mask], rtol=1e-4, atol=1e-5)
    # the term added to the loss is rehearsal_loss on the rows drawn, under the current weights
    draws = trainer._rehearsal_draws.get_state()
    term = trainer._rehearsal_term(trainer.model)
    trainer._rehearsal_draws.set_state(draws)
    rows = torch.randint(len(data["completion_ids"]), (6,), generator=trainer._rehearsal_draws)
    now = old_policy_statistics(trainer, {name: data[name][rows] for name in ("prompt_ids", "prompt_mask",
                                                                            "completion_ids", "completion_mask")})[0]
    expected = rehearsal_loss(now.float(), data["ref_logp"][rows], data["completion_mask"][rows], 0.5, "forward")
    torch.testing.assert_close(term.detach(), expected, rtol=1e-4, atol=1e-6)
    assert expected > 0  # the policy moved away from pi_0, and the term pulls it back
    logged = [h["explore/dph_rehearsal_loss"] for h in trainer.state.log_history if "explore/dph_rehearsal_loss" in h]
    assert len(logged) == 2 and logged[0] == pytest.approx(0.0, abs=1e-6)  # at step 1 the policy is pi_0: f(1) = 0
    assert os.path.exists(tmp_path / "out" / "rehearsal-0.pt")

    again = ExploreGRPOTrainer(model=path, reward_funcs=[solves_known_prompts(set()), lucky_reward], args=args,
                               train_dataset=dataset, processing_class=tokenizer)
    again._prepare_rehearsal(resumed=True)  # resume reads the set back instead of sampling again
    assert torch.equal(again.rehearsal["completion_ids"], data["completion_ids"])
    assert len(again.train_dataset) == 11
    args.output_dir = str(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="rehearsal set is missing"):
        again._prepare_rehearsal(resumed=True)


def test_advantage_settings_the_estimator_does_not_read_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"advantage_hp: \['pkpo_k'\] are not read by advantage='grpo'"):
        ExploreGRPOConfig(output_dir=str(tmp_path), advantage="grpo", advantage_hp={"pkpo_k": 4}, use_cpu=True)
    assert ExploreGRPOConfig(output_dir=str(tmp_path), advantage="pkpo", advantage_hp={"pkpo_k": 4}, use_cpu=True)
