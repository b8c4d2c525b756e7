"""The verl plugin. With verl importable (e.g. `pip install verl==0.9.1`, CPU is enough): the entry
point registers on `import verl`, our losses and estimators agree with verl's own, and verl's own
FSDP engine code (prepare_model_outputs, train_batch, micro-batching, ppo_loss) with our hooks gives
the core loss and gradient. Without it: CONTRACT TESTS against verl's documented signatures, with
stand-in registries, plus the plugin's own pieces (statistics columns, gate across ranks, hooks)."""

import contextlib
import json
import os
import types

import numpy as np
import pytest
import torch

from rlvr_explore import losses
from rlvr_explore.advantages import ANSWER_COUNTS_FILE, compute_advantages
from rlvr_explore.candidates import token_stats
from rlvr_explore.integrations import verl as plugin

B, T = 6, 5


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    log_prob = (-1.0 - torch.rand(B, T, generator=g, dtype=torch.float64)).requires_grad_()
    old_log_prob = log_prob.detach() + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    advantages = torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, T).contiguous()
    response_mask = torch.ones(B, T, dtype=torch.float64)
    response_mask[1, 3:] = 0
    return old_log_prob, log_prob, advantages, response_mask


# ---------------------------------------------------------------- contract tests (no verl needed)


def stand_in_core_algos():
    """verl.trainer.ppo.core_algos as documented for 0.9.x: two registries with decorators and
    agg_loss(loss_mat, loss_mask, loss_agg_mode, dp_size, batch_num_tokens, global_batch_size, loss_scale_factor)."""
    module = types.SimpleNamespace(POLICY_LOSS_REGISTRY={}, ADV_ESTIMATOR_REGISTRY={})

    def register_policy_loss(name):
        def wrap(fn):
            module.POLICY_LOSS_REGISTRY[name] = fn
            return fn
        return wrap

    def register_adv_est(name):
        def wrap(fn):
            module.ADV_ESTIMATOR_REGISTRY[name] = fn
            return fn
        return wrap

    def agg_loss(loss_mat, loss_mask, loss_agg_mode, dp_size=1, batch_num_tokens=None, global_batch_size=None,
                 loss_scale_factor=None):
        assert loss_agg_mode == "token-mean"
        tokens = loss_mask.sum() if batch_num_tokens is None else batch_num_tokens
        return (loss_mat * loss_mask).sum() / tokens * dp_size

    module.register_policy_loss, module.register_adv_est, module.agg_loss = register_policy_loss, register_adv_est, agg_loss
    return module


LOGPROB_ONLY = ("grpo", "dr_grpo", "dapo", "gspo", "gspo_n", "psr", "nsr", "w_reinforce", "grpo_n")


def test_contract_registration_names():
    module = stand_in_core_algos()
    added = plugin.register(module)
    assert set(module.POLICY_LOSS_REGISTRY) == {f"rlvr_{m}" for m in losses.available()}
    assert set(module.ADV_ESTIMATOR_REGISTRY) == {f"rlvr_{e}" for e in plugin.ESTIMATORS}
    assert plugin.register(module) == [] and len(added) == len(losses.available()) + len(plugin.ESTIMATORS)


@pytest.mark.parametrize("method", LOGPROB_ONLY)
def test_contract_policy_loss_signature_and_value(method, monkeypatch):
    if "kl_cov_ratio" in losses.get_method(method).accepted_keys:
        monkeypatch.setenv("RLVR_EXPLORE_HP", '{"kl_cov_ratio": 0.2}')
    module = stand_in_core_algos()
    plugin.register(module)
    old, new, adv, mask = batch(1)
    config = {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "global_batch_info": {"dp_size": 1}}
    torch.manual_seed(0)
    loss, metrics = module.POLICY_LOSS_REGISTRY[f"rlvr_{method}"](
        old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask, loss_agg_mode="token-mean",
        config=config, rollout_is_weights=None)
    hp = plugin.loss_hyperparameters(method, config)
    torch.manual_seed(0)
    expected, _ = losses.policy_loss(method, logp=new, old_logp=old, advantages=adv, response_mask=mask.bool(),
                                     loss_agg_mode="token-mean", **hp)
    torch.testing.assert_close(loss, expected)
    assert all(k.startswith("actor/") and isinstance(v, float) for k, v in metrics.items())


# methods whose verl loss has no dual clip to pass (their own clip), and why the clip cannot bind
# in ours: PSR trains on positive responses only; KL-Cov's loss, like verl's, is unclipped
DUAL_CLIP_NEVER_BINDS = {"psr": "positives only", "kl_cov": "unclipped, as verl's kl_cov"}


@pytest.mark.parametrize("method", [m for m in losses.available() if m not in plugin.VERL_WITHOUT_DUAL_CLIP])
def test_contract_verls_dual_clip_reaches_every_method_that_has_it(method, monkeypatch):
    """verl's ``clip_ratio_c`` from the actor config reaches the loss (the registered verl loss
    equals the core loss at that c, statistics and all), and binds where it should: at c = 1.5
    against no dual clip, on a batch whose negative responses moved far from the old policy."""
    hp = {"q": 0.0} if method == "forking" else {}  # every token forks, so the negatives' are trained
    monkeypatch.setenv("RLVR_EXPLORE_HP", json.dumps(hp))
    module = stand_in_core_algos()
    plugin.register(module)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, T, 11, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(11, (B, T), generator=g)
    stats = token_stats(logits, ids, top_n=3)
    old = stats.logp.detach() - 1.5 * torch.rand(B, T, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 1.0, -1.0], dtype=torch.float64)[:, None].expand(B, T).contiguous()
    mask = torch.ones(B, T, dtype=torch.float64)
    statistics = {"entropy": stats.entropy, "topn_logp": stats.topn_logp, "topn_ids": stats.topn_ids, "response_ids": ids}
    values = {}
    for c in (1.5, 1e9):
        config = {"clip_ratio": 0.2, "clip_ratio_c": c, "global_batch_info": {"dp_size": 1}}
        assert plugin.loss_hyperparameters(method, config)["clip_ratio_c"] == c
        token = plugin.MICRO_BATCH_STATISTICS.set(statistics)
        try:
            values[c], _ = module.POLICY_LOSS_REGISTRY[f"rlvr_{method}"](old, stats.logp, adv, mask, "token-mean", config, None)
        finally:
            plugin.MICRO_BATCH_STATISTICS.reset(token)
        expected, _ = losses.policy_loss(method, logp=stats.logp, old_logp=old, advantages=adv, response_mask=mask.bool(),
                                         loss_agg_mode="token-mean", **statistics, **plugin.loss_hyperparameters(method, config))
        torch.testing.assert_close(values[c], expected)
    binds = not torch.isclose(values[1.5], values[1e9])
    assert binds != (method in DUAL_CLIP_NEVER_BINDS), (method, values)


def test_contract_statistics_needed_reads_the_loss_mode(monkeypatch):
    config = lambda mode: {"policy_loss": {"loss_mode": mode}}  # noqa: E731
    assert plugin.statistics_needed(config("vanilla")) is None
    assert plugin.statistics_needed(config("rlvr_grpo")) is None
    method, _, candidates, batch_gate = plugin.statistics_needed(config("rlvr_casp"))
    assert (method, candidates, batch_gate) == ("casp", True, False)  # CaSP's gate is per response by default
    assert plugin.statistics_needed(config("rlvr_forking"))[2:] == (True, True)
    assert plugin.statistics_needed(config("rlvr_kl_cov"))[2:] == (False, True)
    monkeypatch.setenv("RLVR_EXPLORE_HP", '{"quantile_scope": "batch", "top_n": 5}')
    _, loss, _, batch_gate = plugin.statistics_needed(config("rlvr_casp"))
    assert batch_gate and loss.config.top_n == 5


def test_contract_candidate_columns_equal_token_stats():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 7, 13, generator=g, dtype=torch.float64, requires_grad=True)
    columns = plugin.candidate_columns(student_logits=logits, data=None, top_n=2)
    assert set(columns) == {"rlvr_entropy", "rlvr_top1_logp", "rlvr_top1_id", "rlvr_top2_logp", "rlvr_top2_id"}
    assert all(c.shape == (1, 7) for c in columns.values())
    log_softmax = torch.log_softmax(logits, -1)
    values, ids = log_softmax.topk(2, -1)
    torch.testing.assert_close(columns["rlvr_top2_logp"], values[..., 1])
    assert torch.equal(columns["rlvr_top1_id"], ids[..., 0])
    torch.testing.assert_close(columns["rlvr_entropy"], -(log_softmax.exp() * log_softmax).sum(-1))
    (ours,) = torch.autograd.grad(columns["rlvr_top2_logp"].sum() + columns["rlvr_entropy"].sum(), logits)
    (reference,) = torch.autograd.grad(values[..., 1].sum() - (log_softmax.exp() * log_softmax).sum(), logits)
    torch.testing.assert_close(ours, reference)


def test_contract_ppo_loss_replacement_leaves_other_modes_to_verl():
    calls = []
    verl_ppo_loss = lambda config, model_output, data, dp_group=None: calls.append(config) or (torch.zeros(()), {})  # noqa: E731
    replacement = plugin.make_ppo_loss(verl_ppo_loss, no_padding_2_padding=None)
    replacement({"policy_loss": {"loss_mode": "vanilla"}}, {}, {})
    replacement({"policy_loss": {"loss_mode": "rlvr_grpo"}}, {}, {})
    assert len(calls) == 2
    with pytest.raises(RuntimeError, match="no candidate statistics"):
        replacement({"policy_loss": {"loss_mode": "rlvr_casp"}}, {"log_probs": None}, {})


def test_contract_losses_that_need_statistics_refuse_to_run_without_them():
    module = stand_in_core_algos()
    plugin.register(module)
    old, new, adv, mask = batch(1)
    with pytest.raises(RuntimeError, match="model-output hook"):
        module.POLICY_LOSS_REGISTRY["rlvr_casp"](old, new, adv, mask, "token-mean",
                                                {"policy_loss": {"loss_mode": "rlvr_casp"}}, None)


def namespace(tree: dict):
    """A config tree read by attribute, as verl's OmegaConf configs are."""
    return types.SimpleNamespace(**{k: namespace(v) if isinstance(v, dict) else v for k, v in tree.items()})


@pytest.fixture
def late_seams(tmp_path, monkeypatch):
    """A module that is imported after the plugin, with a seam of the expected signature and one
    whose signature changed (as in a newer verl); the plugin's seam state restored afterwards."""
    (tmp_path / "late_module.py").write_text(
        "def ppo_loss(config, model_output, data, dp_group=None):\n    return 'verl'\n"
        "def train_batch(self, data, loss_function, new_keyword=None):\n    return 'verl'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "late_module", raising=False)
    seams = (plugin.Seam("late_module", "ppo_loss", ("config", "model_output", "data", "dp_group"), "statistics",
                         wrap=lambda original, module: lambda *args: "wrapped"),
             plugin.Seam("late_module", "train_batch", ("self", "data", "loss_function"), "train_batch",
                         wrap=lambda original, module: lambda *args: "wrapped"))
    monkeypatch.setattr(plugin.seams, "SEAMS", plugin.seams.SEAMS + seams)
    monkeypatch.setattr(plugin.STATE, "fitted", set(plugin.STATE.fitted))
    monkeypatch.setattr(plugin.STATE, "refused", dict(plugin.STATE.refused))
    monkeypatch.setattr("sys.meta_path", list(__import__("sys").meta_path))
    return seams


def test_contract_seams_are_fitted_right_after_their_module_is_imported(late_seams, caplog):
    plugin.install()
    import late_module

    assert late_module.ppo_loss() == "wrapped"  # fitted before anything could import the name
    assert late_module.train_batch(None, None, None) == "verl"  # a changed signature: verl's own, untouched
    assert "late_module.train_batch" in plugin.STATE.refused and "late_module.ppo_loss" in plugin.STATE.fitted
    warning = [r for r in caplog.records if r.levelname == "WARNING" and "late_module.train_batch" in r.getMessage()]
    assert warning and "new_keyword" in warning[0].getMessage() and "batch gates" in warning[0].getMessage()


def test_contract_a_run_that_needs_a_refused_seam_stops_at_start_up(late_seams, monkeypatch):
    plugin.install()
    import late_module  # noqa: F401

    monkeypatch.delenv("RLVR_EXPLORE_HP", raising=False)
    late = plugin.Seam("late_module", "train_batch", ("self", "data", "loss_function"), "train_batch")
    monkeypatch.setattr(plugin.seams, "SEAMS", (late,))  # the only seam: the one that did not fit
    config = lambda mode, strategy="fsdp": namespace({  # noqa: E731
        "actor_rollout_ref": {"actor": {"strategy": strategy, "policy_loss": {"loss_mode": mode}},
                              "model": {"use_fused_kernels": False}},
        "algorithm": {"adv_estimator": "grpo", "rollout_correction": None}})
    with pytest.raises(RuntimeError, match=r"v1 .*loss_mode=rlvr_kl_cov needs rlvr-explore's hook on "
                                           r"late_module.train_batch.*new_keyword"):
        plugin.check_run(config("rlvr_kl_cov"), plugin.V1)  # KL-Cov's batch gate runs in train_batch
    plugin.check_run(config("rlvr_grpo"), plugin.V1)  # log-probs only: nothing of that seam needed
    plugin.check_run(config("vanilla"), plugin.V1)  # verl's own loss: the plugin asks nothing
    with pytest.raises(RuntimeError, match="strategy=megatron has none"):
        plugin.check_run(config("rlvr_casp", strategy="megatron"), plugin.LEGACY)
    with pytest.raises(RuntimeError, match="no method 'nonesuch'"):
        plugin.check_run(config("rlvr_nonesuch"), plugin.V1)
    estimating = config("vanilla")
    estimating.algorithm.adv_estimator = "rlvr_grpo"
    monkeypatch.setenv("RLVR_EXPLORE_HP", "{pkpo_k: 4}")
    with pytest.raises(RuntimeError, match=r"\['pkpo_k'\] are not read by algorithm.adv_estimator=rlvr_grpo"):
        plugin.check_run(estimating, plugin.V1)


def test_contract_advantage_signature():
    module = stand_in_core_algos()
    plugin.register(module)
    rewards = torch.zeros(B, T)
    rewards[:, -1] = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    index = np.array(["p1", "p1", "p1", "p2", "p2", "p2"], dtype=object)
    adv, returns = module.ADV_ESTIMATOR_REGISTRY["rlvr_w_reinforce"](
        token_level_rewards=rewards, response_mask=torch.ones(B, T), index=index, config=None)
    assert adv[:, 0].tolist() == pytest.approx([0.1, -1, 0.1, 0.1, -1, -1]) and torch.equal(adv, returns)
    with pytest.raises(ValueError, match="needs group ids"):
        module.ADV_ESTIMATOR_REGISTRY["rlvr_grpo"](token_level_rewards=rewards, response_mask=torch.ones(B, T))


def _gate_on_two_ranks(rank, store_path, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    g = torch.Generator().manual_seed(5)
    entropy, mask = torch.rand(7, 6, generator=g), torch.rand(7, 6, generator=g) > 0.2
    mask[:3, 4:] = False  # rank 0's responses are at most 4 tokens long, so it holds a narrower batch
    whole = {"logp": -entropy, "old_logp": -entropy, "advantages": torch.ones(7, 6), "response_mask": mask, "entropy": entropy}
    rows, width = (slice(0, 3), 4) if rank == 0 else (slice(3, 7), 6)
    mine = {key: value[rows, :width] for key, value in whole.items()}
    everyone, own = plugin.gather_rows(mine, None)
    gate = losses.token_gate("forking", **everyone, q=0.7)[own][:, :width]
    expected = losses.token_gate("forking", **whole, q=0.7)[rows, :width]
    results[rank] = bool(torch.equal(gate, expected)) and everyone["entropy"].shape == (7, 6)
    dist.destroy_process_group()


def test_contract_batch_gate_spans_every_data_parallel_rank(tmp_path):
    """Two gloo processes holding different shares of a batch select the same tokens as one
    process holding all of it (the forking entropy quantile over the whole batch)."""
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_gate_on_two_ranks, args=(str(tmp_path / "store"), results), nprocs=2)
    assert dict(results) == {0: True, 1: True}


def test_bad_environment_hyperparameters_are_named(monkeypatch):
    monkeypatch.setenv("RLVR_EXPLORE_HP", "{alpha: 1, top_n: [3}")
    with pytest.raises(ValueError, match="RLVR_EXPLORE_HP is not a YAML or JSON mapping"):
        plugin.environment_hyperparameters()
    monkeypatch.setenv("RLVR_EXPLORE_HP", "alpha=1")
    with pytest.raises(ValueError, match="RLVR_EXPLORE_HP must be a mapping such as"):
        plugin.environment_hyperparameters()
    for text in ('{"alpha": 1, "shaping": ["outcome_ucb"]}', "{alpha: 1, shaping: [outcome_ucb]}"):  # JSON, YAML
        monkeypatch.setenv("RLVR_EXPLORE_HP", text)
        assert plugin.environment_hyperparameters() == {"alpha": 1, "shaping": ["outcome_ucb"]}
    monkeypatch.setenv("RLVR_EXPLORE_HP", '{"alpah": 0.3}')
    with pytest.raises(ValueError, match=r"RLVR_EXPLORE_HP: \['alpah'\] do not apply to loss 'casp'; it takes .*'alpha'"):
        plugin.loss_hyperparameters("casp", {})
    monkeypatch.setenv("RLVR_EXPLORE_HP", '{"entropy_coeff": 0.01}')
    with pytest.raises(ValueError, match="set through verl's actor.entropy_coeff"):
        plugin.loss_hyperparameters("casp", {})
    # verl aggregates the loss itself, so these would be ignored there: refused, naming verl's own key
    monkeypatch.setenv("RLVR_EXPLORE_HP", '{"loss_agg_mode": "token-mean", "max_response_length": 512}')
    with pytest.raises(ValueError, match="loss_agg_mode is set through verl's actor.loss_agg_mode; "
                                         "max_response_length is set through verl's actor.loss_scale_factor"):
        plugin.loss_hyperparameters("casp", {})


# ---------------------------------------------------------------- DPH-RL's rehearsal: the driver's side


def rehearsal_set(rows=7, prompt_len=3, response_len=4, seed=5, vocab=17):
    """Left-padded prompts, right-padded responses of ragged lengths, and stored pi_0 log-probs."""
    g = torch.Generator().manual_seed(seed)
    prompt_lens = torch.randint(1, prompt_len + 1, (rows,), generator=g)
    response_lens = torch.randint(1, response_len + 1, (rows,), generator=g)
    prompt_mask = torch.arange(prompt_len)[None] >= prompt_len - prompt_lens[:, None]
    response_mask = torch.arange(response_len)[None] < response_lens[:, None]
    return {"prompt_ids": torch.randint(1, vocab, (rows, prompt_len), generator=g) * prompt_mask,
            "prompt_mask": prompt_mask,
            "response_ids": torch.randint(1, vocab, (rows, response_len), generator=g) * response_mask,
            "response_mask": response_mask,
            "ref_logp": -(0.2 + 3 * torch.rand(rows, response_len, generator=g)) * response_mask}


class DriverBatch:
    """What the _update_actor hook reads of verl's DataProto: its length and meta_info."""

    def __init__(self, rows):
        self.rows, self.meta_info = rows, {}

    def __len__(self):
        return self.rows


def update_actor_stand_in(step, mini_batch_size=2, n=4, seed=1):
    config = types.SimpleNamespace(actor_rollout_ref=types.SimpleNamespace(
        actor=types.SimpleNamespace(ppo_mini_batch_size=mini_batch_size, data_loader_seed=seed),
        rollout=types.SimpleNamespace(n=n)))
    return types.SimpleNamespace(global_steps=step, config=config)


def test_contract_update_actor_hook_sends_each_step_its_rehearsal_chunk(tmp_path, monkeypatch):
    path = tmp_path / "rehearsal.pt"
    stored = rehearsal_set(rows=9)
    torch.save(stored, path)
    monkeypatch.setenv("RLVR_EXPLORE_HP", json.dumps({"dph_rehearsal": str(path), "dph_chunk": 6, "dph_coef": 0.02,
                                                      "dph_divergence": "js"}))
    monkeypatch.setattr(plugin.STATE, "driver", plugin.DriverState())
    sent = []

    def original(self, batch, reported=True):
        sent.append(batch.meta_info[plugin.REHEARSAL_KEY])
        return types.SimpleNamespace(meta_info={"metrics": {plugin.REHEARSAL_METRIC: 0.1} if reported else {}})

    hooked = plugin.make_update_actor(original)
    batch = DriverBatch(16)  # two mini-batches of 2 prompts x 4 responses
    for step in (3, 3, 4):
        hooked(update_actor_stand_in(step), batch)
        assert plugin.REHEARSAL_KEY not in batch.meta_info  # not logged or dumped with the batch
    first, again, later = sent
    assert first.step == 3 and first.dph.coef == 0.02 and first.dph.divergence == "js"
    assert [len(share["ref_logp"]) for share in first.shares] == [3, 3]
    drawn = torch.cat([share["ref_logp"] for share in first.shares])
    positions = [next(i for i in range(9) if torch.equal(stored["ref_logp"][i], row)) for row in drawn]
    assert len(set(positions)) == 6  # without replacement, from the stored set
    for key in plugin.REHEARSAL_FIELDS:
        assert torch.equal(torch.cat([share[key] for share in first.shares]), stored[key][positions])
    assert all(torch.equal(a["ref_logp"], b["ref_logp"]) for a, b in zip(first.shares, again.shares))  # resume draws alike
    assert not torch.equal(torch.cat([s["ref_logp"] for s in later.shares]), drawn)
    with pytest.raises(RuntimeError, match="ran without the rehearsal term.*FSDP engine"):
        plugin.make_update_actor(lambda self, b: original(self, b, reported=False))(update_actor_stand_in(5), batch)
    with pytest.raises(ValueError, match="dph_chunk=6 does not split into the step's 4 mini-batches"):
        hooked(update_actor_stand_in(5, mini_batch_size=1), batch)


def test_contract_a_rehearsal_set_smaller_than_the_chunk_is_drawn_whole_and_repeated():
    from rlvr_explore.losses.rehearsal import DPHConfig

    stored = rehearsal_set(rows=4)
    chunk = plugin.draw_rehearsal_chunk(stored, DPHConfig(enabled=True, chunk=10), mini_batches=2, seed=0, step=1)
    drawn = torch.cat([share["ref_logp"] for share in chunk.shares])
    counts = [sum(torch.equal(row, stored["ref_logp"][i]) for row in drawn) for i in range(4)]
    assert sorted(counts) == [2, 2, 3, 3]  # twice through the set, then two more rows


def test_contract_update_actor_hook_without_dph_or_with_an_empty_set(tmp_path, monkeypatch):
    monkeypatch.setattr(plugin.STATE, "driver", plugin.DriverState())
    seen = []
    hooked = plugin.make_update_actor(lambda self, batch: seen.append(dict(batch.meta_info)) or "verl's output")
    monkeypatch.delenv("RLVR_EXPLORE_HP", raising=False)
    assert hooked(update_actor_stand_in(1), DriverBatch(8)) == "verl's output"
    empty = {key: value[:0] for key, value in rehearsal_set().items()}
    torch.save(empty, tmp_path / "empty.pt")
    monkeypatch.setenv("RLVR_EXPLORE_HP", json.dumps({"dph_rehearsal": str(tmp_path / "empty.pt")}))
    with pytest.warns(UserWarning, match="holds no rehearsal response; training with RL alone"):
        assert hooked(update_actor_stand_in(1), DriverBatch(8)) == "verl's output"
    assert seen == [{}, {}]


def test_contract_rehearsal_settings_and_files_are_checked(tmp_path, monkeypatch):
    from rlvr_explore.rollout import Rollout

    monkeypatch.setenv("RLVR_EXPLORE_HP", json.dumps({"dph_coef": 0.05}))
    with pytest.raises(ValueError, match=r"\['dph_coef'\] need dph_rehearsal, the path of the rehearsal set"):
        plugin.dph_settings()
    monkeypatch.setenv("RLVR_EXPLORE_HP", json.dumps({"dph_rehearsal": "x.pt", "dph_presample": 8}))
    with pytest.raises(ValueError, match=r"\['dph_presample'\] do not apply through verl"):
        plugin.dph_settings()
    monkeypatch.setenv("RLVR_EXPLORE_HP", json.dumps({"dph_rehearsal": "x.pt", "dph_coef": -1}))
    with pytest.raises(ValueError, match="RLVR_EXPLORE_HP dph_coef must be >= 0"):
        plugin.dph_settings()
    monkeypatch.setenv("RLVR_EXPLORE_HP", json.dumps({"dph_rehearsal": "x.pt", "dph_coef": 0.05, "alpha": 0.3}))
    assert plugin.dph_settings()[0] == "x.pt" and plugin.loss_hyperparameters("casp", None)["alpha"] == 0.3
    assert plugin.advantage_settings() == ((), {})  # the dph_* keys are neither the loss's nor the estimator's

    good = rehearsal_set()
    cases = {"no key": ({k: v for k, v in good.items() if k != "ref_logp"}, r"no tensor \['ref_logp'\]"),
             "shape": ({**good, "ref_logp": good["ref_logp"][:, :2]}, "ref_logp has shape .*expected"),
             "right-padded prompt": ({**good, "prompt_mask": good["prompt_mask"].flip(1)}, "left-padded prompt"),
             "left-padded response": ({**good, "response_mask": good["response_mask"].flip(1)}, "right-padded response"),
             "probability above 1": ({**good, "ref_logp": -good["ref_logp"]}, r"log-probabilities \(<= 0\)")}
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match=f"{tmp_path / 'bad.pt'}: .*{message}"):
            plugin.load_rehearsal_set(str(tmp_path / "bad.pt"))
    with pytest.raises(FileNotFoundError, match="dph_rehearsal: .*missing.pt does not exist"):
        plugin.load_rehearsal_set(str(tmp_path / "missing.pt"))

    rows = len(good["ref_logp"])  # the built-in trainer's rehearsal.pt holds a Rollout whose old_logp is pi_0's
    rollout = Rollout(prompts=[""] * rows, prompt_ids=good["prompt_ids"], prompt_mask=good["prompt_mask"],
                      response_ids=good["response_ids"], response_mask=good["response_mask"], old_logp=good["ref_logp"],
                      entropy=torch.zeros(rows, 4), topn_logp=torch.zeros(rows, 4, 1),
                      topn_ids=torch.zeros(rows, 4, 1, dtype=torch.long), branching_factor=torch.zeros(rows, 4),
                      texts=[""] * rows)
    torch.save({"rl_prompts": [], "rehearsal": rollout, "stats": {}}, tmp_path / "builtin.pt")
    loaded = plugin.load_rehearsal_set(str(tmp_path / "builtin.pt"))
    torch.testing.assert_close(loaded["ref_logp"], good["ref_logp"].float())
    assert torch.equal(loaded["response_ids"], good["response_ids"])


# ---------------------------------------------------------------- with the real verl


def trainer_stand_in(tmp_path, adv_estimator="rlvr_grpo", step=1, resume_mode="auto"):
    """What the driver hooks read of verl's RayPPOTrainer."""
    config = {"algorithm": {"adv_estimator": adv_estimator},
              "trainer": {"default_local_dir": str(tmp_path), "resume_mode": resume_mode, "resume_from_path": None}}
    return types.SimpleNamespace(global_steps=step, config=namespace(config))


def test_contract_answer_counts_survive_a_verl_checkpoint(tmp_path, monkeypatch):
    counts = {("3f2a", "12"): 3, ("3f2a", None): 1, ("9b01", "7"): 2}
    monkeypatch.setattr(plugin.STATE.driver, "answer_counts", dict(counts))
    trainer = trainer_stand_in(tmp_path, step=40)
    plugin.make_save_checkpoint(lambda self: None)(trainer)
    assert (tmp_path / "global_step_40" / ANSWER_COUNTS_FILE).exists()
    monkeypatch.setattr(plugin.STATE.driver, "answer_counts", {})
    trainer.global_steps = 0  # verl's _load_checkpoint sets it from the folder it resumes
    plugin.make_load_checkpoint(lambda self: setattr(self, "global_steps", 40))(trainer)
    assert plugin.STATE.driver.answer_counts == counts
    plugin.make_load_checkpoint(lambda self: setattr(self, "global_steps", 0))(trainer_stand_in(tmp_path / "new"))
    assert plugin.STATE.driver.answer_counts == counts  # training from scratch leaves the driver's counts alone


def test_contract_old_log_prob_hook_keeps_the_entropy_only_for_estimators_that_read_it(tmp_path, monkeypatch):
    monkeypatch.delenv("RLVR_EXPLORE_HP", raising=False)
    entropy = torch.rand(B, T)

    def original(self, batch):
        return types.SimpleNamespace(batch={"old_log_probs": -entropy, "entropys": entropy}), 0.5

    for estimator, kept in (("rlvr_gtpo", True), ("rlvr_grpo_s", True), ("rlvr_grpo", False), ("gae", False)):
        old_log_prob, mfu = plugin.make_compute_old_log_prob(original)(trainer_stand_in(tmp_path, estimator, step=7), None)
        assert (plugin.ENTROPY_KEY in old_log_prob.batch) == kept and mfu == 0.5
        assert plugin.STATE.driver.step == 6  # verl's first step is 1, ours 0
    monkeypatch.setenv("RLVR_EXPLORE_HP", '{"shaping": ["entropy_adv"]}')
    old_log_prob, _ = plugin.make_compute_old_log_prob(original)(trainer_stand_in(tmp_path, "rlvr_grpo"), None)
    assert torch.equal(old_log_prob.batch[plugin.ENTROPY_KEY], entropy)


def test_contract_environment_splits_advantage_and_loss_keys(monkeypatch):
    monkeypatch.setenv("RLVR_EXPLORE_HP", '{"alpha": 0.3, "pkpo_k": 2, "shaping": ["outcome_ucb"]}')
    assert plugin.advantage_settings() == (("outcome_ucb",), {"pkpo_k": 2})
    assert plugin.loss_hyperparameters("casp", None)["alpha"] == 0.3  # the loss ignores the estimator's keys
    monkeypatch.setenv("RLVR_EXPLORE_HP", '{"pkpo_kk": 2}')
    with pytest.raises(ValueError, match="pkpo_kk.*neither advantage, DPH-RL nor loss"):
        plugin.advantage_settings()
    monkeypatch.setenv("RLVR_EXPLORE_HP", '{"shaping": "outcome_ucb"}')
    with pytest.raises(ValueError, match="shaping must be a list"):
        plugin.advantage_settings()


def rollout_for_the_driver(entropy=True):
    """A verl batch after old log-probs and rewards: two questions (the first left-padded), three
    responses each, ragged lengths, and the reward function's extracted answers."""
    from verl import DataProto

    g = torch.Generator().manual_seed(4)
    prompts = torch.tensor([[0, 5, 6]] * 3 + [[7, 8, 9]] * 3)
    response_mask = torch.ones(B, T)
    response_mask[1, 2:] = 0
    response_mask[4, 4:] = 0
    attention_mask = torch.cat([(prompts > 0).float(), response_mask], 1)
    rewards = torch.zeros(B, T)
    rewards[torch.arange(B), response_mask.sum(1).long() - 1] = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    tensors = {"prompts": prompts, "attention_mask": attention_mask, "response_mask": response_mask,
               "token_level_rewards": rewards, "old_log_probs": -torch.rand(B, T, generator=g) * 2}
    if entropy:
        tensors[plugin.ENTROPY_KEY] = torch.rand(B, T, generator=g)
    answers = np.array(["12", "7", "12", None, "3", "3"], dtype=object)
    return DataProto.from_dict(tensors=tensors, non_tensors={"uid": np.array(list("aaabbb"), dtype=object),
                                                              "answer": answers})


@pytest.mark.parametrize("estimator, settings", [
    ("unlikeliness", {"unlikeliness_beta": 0.5}),
    ("gtpo", {}),
    ("grpo_s", {"gtpo_alpha2": 0.3}),
    ("pkpo", {"pkpo_k": 2, "pkpo_k_switch_step": 4}),
    ("grpo", {"shaping": ["outcome_ucb", "outcome_batch"], "outcome_variant": "ucb_mean"}),
])
def test_real_verl_driver_hands_estimators_what_they_read(estimator, settings, tmp_path, monkeypatch):
    """verl's own compute_advantage, hooked, equals compute_advantages given the same inputs by hand;
    the outcome counts persist in the driver across steps."""
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    import verl  # noqa: F401
    import verl.trainer.ppo.ray_trainer as ray_trainer
    from omegaconf import OmegaConf

    assert hasattr(ray_trainer.compute_advantage, "rlvr_explore_original")  # patched by the post-import hook
    monkeypatch.setenv("RLVR_EXPLORE_HP", json.dumps(settings))
    monkeypatch.setattr(plugin.STATE.driver, "answer_counts", {})
    reference_counts = {}
    for step in (3, 4):  # PKPO's k switches to 1 at step 4
        monkeypatch.setattr(plugin.STATE.driver, "step", step)
        data = rollout_for_the_driver()
        entropy, mask = data.batch[plugin.ENTROPY_KEY].clone(), data.batch["response_mask"]
        ours = ray_trainer.compute_advantage(data, adv_estimator=f"rlvr_{estimator}", config=OmegaConf.create({}))
        assert plugin.ENTROPY_KEY not in ours.batch.keys()  # not sent on to the actor
        hp = {k: v for k, v in settings.items() if k != "shaping"}
        prompt_ids = ["q1"] * 3 + ["q2"] * 3
        reference = compute_advantages(
            estimator, data.batch["token_level_rewards"].sum(-1), torch.tensor([0, 0, 0, 1, 1, 1]), mask,
            shaping=settings.get("shaping", ()), entropy=entropy, old_logp=data.batch["old_log_probs"], step=step,
            answers=["12", "7", "12", None, "3", "3"], prompt_ids=prompt_ids, answer_counts=reference_counts, **hp)
        torch.testing.assert_close(ours.batch["advantages"], reference)
    if "shaping" in settings:
        keys = dict(zip(prompt_ids, plugin.prompt_keys(data.batch["prompts"], data.batch["attention_mask"])))
        assert len(set(keys.values())) == 2  # one id per question, the padding left out
        assert plugin.STATE.driver.answer_counts == {(keys[q], a): n for (q, a), n in reference_counts.items()}


def test_real_verl_legacy_old_log_prob_hook_is_what_keeps_the_entropy(monkeypatch):
    """verl's own RayPPOTrainer._compute_old_log_prob, hooked, over a worker group that answers
    as verl's does (nested per-token outputs): the entropy verl drops after logging is kept for
    GTPO and reaches the estimator; verl's method without the hook leaves GTPO without it."""
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    import verl.trainer.ppo.ray_trainer as ray_trainer
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.utils import tensordict_utils as tu

    monkeypatch.delenv("RLVR_EXPLORE_HP", raising=False)
    model = TinyPackedModel(17)
    data = verl_batch(model, 17)
    padded = {key: data[key] for key in ("prompts", "responses", "response_mask")}
    prompt_mask = (torch.arange(3)[None] >= 3 - torch.tensor([3, 2, 3, 1, 2, 3])[:, None]).long()
    attention = torch.cat([prompt_mask, padded["response_mask"].long()], 1)
    rollout = lambda: DataProto.from_dict(tensors={  # noqa: E731
        **padded, "input_ids": torch.cat([padded["prompts"], padded["responses"]], 1), "attention_mask": attention,
        "position_ids": (attention.cumsum(1) - 1).clamp(min=0)})
    g = torch.Generator().manual_seed(2)

    def compute_log_prob(batch_td):  # per token of each packed sequence, as verl's workers return them
        values = lambda: torch.nested.nested_tensor_from_jagged(  # noqa: E731
            torch.rand(batch_td["input_ids"].values().shape, generator=g), batch_td["input_ids"].offsets())
        return tu.get_tensordict({"log_probs": values(), "entropy": values()}, non_tensor_dict={"metrics": {"mfu": 0.5}})

    config = OmegaConf.create({"actor_rollout_ref": {"actor": {}}, "algorithm": {"adv_estimator": "rlvr_gtpo"}})
    trainer = types.SimpleNamespace(config=config, global_steps=3,
                                    actor_rollout_wg=types.SimpleNamespace(compute_log_prob=compute_log_prob))
    rewards = torch.zeros(B, T)
    rewards[torch.arange(B), padded["response_mask"].sum(1).long() - 1] = torch.tensor([1.0, 0, 1, 0, 1, 1])
    for hooked in (True, False):
        method = ray_trainer.RayPPOTrainer._compute_old_log_prob
        batch = rollout()
        old_log_prob, mfu = (method if hooked else method.rlvr_explore_original)(trainer, batch)
        assert mfu == 0.5 and (plugin.ENTROPY_KEY in old_log_prob.batch.keys()) == hooked
        step = batch.union(old_log_prob)
        step.batch["token_level_rewards"] = rewards
        step.non_tensor_batch["uid"] = np.array(list("aaabbb"), dtype=object)
        if not hooked:
            with pytest.raises(RuntimeError, match=r"rlvr_gtpo reads \['entropy'\]"):
                ray_trainer.compute_advantage(step, adv_estimator="rlvr_gtpo", config=OmegaConf.create({}))
            continue
        assert plugin.STATE.driver.step == 2
        entropy = step.batch[plugin.ENTROPY_KEY].clone()
        torch.testing.assert_close(entropy, step.batch["entropys"])
        ours = ray_trainer.compute_advantage(step, adv_estimator="rlvr_gtpo", config=OmegaConf.create({}))
        reference = compute_advantages("gtpo", rewards.sum(-1), torch.tensor([0, 0, 0, 1, 1, 1]), padded["response_mask"],
                                       entropy=entropy, old_logp=step.batch["old_log_probs"], step=2)
        torch.testing.assert_close(ours.batch["advantages"], reference)


def test_real_verl_driver_without_the_entropy_says_where_it_comes_from(monkeypatch):
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    import verl.trainer.ppo.ray_trainer as ray_trainer
    from omegaconf import OmegaConf

    monkeypatch.delenv("RLVR_EXPLORE_HP", raising=False)
    with pytest.raises(RuntimeError, match=r"rlvr_gtpo reads \['entropy'\].*bypass"):
        ray_trainer.compute_advantage(rollout_for_the_driver(entropy=False), adv_estimator="rlvr_gtpo",
                                      config=OmegaConf.create({}))


class QueueStandIn:
    """verl's TransferQueue as its v1 trainer uses it: fields by key, nested (jagged) per-token
    tensors without padding, non-tensor fields as stacks; a field not stored is left out of a get."""

    def __init__(self, fields: dict, keys: list[str]):
        from tensordict import TensorDict

        self.keys, self.data = keys, TensorDict(fields, batch_size=[len(keys)])

    def kv_batch_get(self, keys, partition_id, select_fields):
        assert list(keys) == self.keys
        return self.data.select(*(field for field in select_fields if field in self.data.keys()))

    def kv_batch_put(self, keys, partition_id, fields):
        for key, value in fields.items():
            self.data[key] = value


def v1_queue(answers_in="extra_fields", entropy=True):
    """rollout_for_the_driver's batch as the v1 trainer's queue holds it after old log-probs and
    rewards; the answers where verl's reward loop puts them, or in a field of their own."""
    from tensordict import NonTensorStack

    data = rollout_for_the_driver()
    mask = data.batch["response_mask"].bool()
    nested = lambda padded: torch.nested.as_nested_tensor([row[keep] for row, keep in zip(padded, mask)],  # noqa: E731
                                                         layout=torch.jagged)
    prompt_mask = data.batch["attention_mask"][:, :3].bool()
    fields = {"response_mask": nested(data.batch["response_mask"]), "old_log_probs": nested(data.batch["old_log_probs"]),
              "rm_scores": nested(data.batch["token_level_rewards"]),
              "prompts": torch.nested.as_nested_tensor([row[keep] for row, keep in zip(data.batch["prompts"], prompt_mask)],
                                                       layout=torch.jagged),
              "uid": NonTensorStack(*data.non_tensor_batch["uid"].tolist())}
    if entropy:
        fields["entropy"] = nested(data.batch[plugin.ENTROPY_KEY])
    answers = data.non_tensor_batch["answer"].tolist()
    if answers_in == "extra_fields":
        fields["extra_fields"] = NonTensorStack(*[{"reward_extra_info": {"answer": a}} for a in answers])
    else:
        fields["answer"] = NonTensorStack(*answers)
    keys = [f"{uid}_{i}_0" for i, uid in enumerate(data.non_tensor_batch["uid"])]
    return data, QueueStandIn(fields, keys)


def v1_trainer(estimator, step, tmp_path=None):
    from omegaconf import OmegaConf

    config = OmegaConf.create({
        "algorithm": {"adv_estimator": f"rlvr_{estimator}", "use_kl_in_reward": False, "gamma": 1.0, "lam": 1.0,
                      "norm_adv_by_std_in_grpo": True, "rollout_correction": None},
        "actor_rollout_ref": {"rollout": {"n": 3}},
        "trainer": {"default_local_dir": str(tmp_path), "resume_mode": "auto", "resume_from_path": None}})
    return types.SimpleNamespace(config=config, global_steps=step)


@pytest.mark.parametrize("estimator, settings, answers_in", [
    ("gtpo", {}, "extra_fields"),
    ("pkpo", {"pkpo_k": 2, "pkpo_k_switch_step": 4}, "extra_fields"),
    ("grpo", {"shaping": ["outcome_ucb", "outcome_batch"], "outcome_variant": "ucb_mean"}, "extra_fields"),
    ("grpo", {"shaping": ["outcome_ucb"]}, "answer"),
])
def test_real_verl_v1_trainer_hands_estimators_what_they_read(estimator, settings, answers_in, monkeypatch):
    """verl's default trainer (v1 PPOTrainer._compute_advantage, hooked) reads its batch from the
    TransferQueue: the estimator gets the entropy, old log-probs, step and answers it keeps there,
    and equals compute_advantages given them by hand, over two steps."""
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    import verl.trainer.ppo.v1.trainer_base as trainer_base
    from transfer_queue.metadata import KVBatchMeta

    assert hasattr(trainer_base.PPOTrainer._compute_advantage, "rlvr_explore_original")
    monkeypatch.setenv("RLVR_EXPLORE_HP", json.dumps(settings))
    monkeypatch.setattr(plugin.STATE.driver, "answer_counts", {})
    reference_counts = {}
    for step in (4, 5):  # verl's global_steps: our steps 3 and 4, where PKPO's k switches to 1
        data, queue = v1_queue(answers_in)
        monkeypatch.setattr(trainer_base, "tq", queue)
        batch = KVBatchMeta(keys=queue.keys, tags=[{}] * B, partition_id="train")
        trainer_base.PPOTrainer._compute_advantage(v1_trainer(estimator, step), batch, {})
        assert plugin.STATE.driver.step == step - 1
        hp = {k: v for k, v in settings.items() if k != "shaping"}
        mask = data.batch["response_mask"]
        reference = compute_advantages(
            estimator, data.batch["token_level_rewards"].sum(-1), torch.tensor([0, 0, 0, 1, 1, 1]), mask,
            shaping=settings.get("shaping", ()), entropy=data.batch[plugin.ENTROPY_KEY],
            old_logp=data.batch["old_log_probs"], step=step - 1, answers=["12", "7", "12", None, "3", "3"],
            prompt_ids=["q1"] * 3 + ["q2"] * 3, answer_counts=reference_counts, **hp)
        ours = torch.nested.to_padded_tensor(queue.data["advantages"], 0.0)
        torch.testing.assert_close(ours, reference * mask)
    assert sorted(plugin.STATE.driver.answer_counts.values()) == sorted(reference_counts.values())


def test_real_verl_v1_trainer_without_the_hook_cannot_reach_the_entropy(monkeypatch):
    """verl's v1 _compute_advantage alone (the hook's original) gives the estimator nothing but the
    rewards: GTPO stops naming what it lacks, so the hook is what carries the entropy."""
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    import verl.trainer.ppo.v1.trainer_base as trainer_base
    from transfer_queue.metadata import KVBatchMeta

    monkeypatch.delenv("RLVR_EXPLORE_HP", raising=False)
    _, queue = v1_queue()
    monkeypatch.setattr(trainer_base, "tq", queue)
    batch = KVBatchMeta(keys=queue.keys, tags=[{}] * B, partition_id="train")
    with pytest.raises(RuntimeError, match=r"rlvr_gtpo reads \['entropy'"):
        trainer_base.PPOTrainer._compute_advantage.rlvr_explore_original(v1_trainer("gtpo", 2), batch, {})
    _, queue = v1_queue(entropy=False)  # bypass mode: verl computed no entropy
    monkeypatch.setattr(trainer_base, "tq", queue)
    with pytest.raises(RuntimeError, match=r"rlvr_gtpo reads \['entropy'\].*bypass"):
        trainer_base.PPOTrainer._compute_advantage(v1_trainer("gtpo", 2), batch, {})


@pytest.mark.parametrize("trainer_kind", ["legacy", "v1"])
def test_real_verl_checkpoints_keep_the_answer_counts(trainer_kind, tmp_path, monkeypatch):
    """verl's own _save_checkpoint and _load_checkpoint (hooked) of either trainer: the counts are
    written into verl's global_step_<n> folder and read back on an automatic resume; verl's
    methods without the hooks lose them."""
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    import verl.trainer.ppo.ray_trainer as ray_trainer
    import verl.trainer.ppo.v1.trainer_base as trainer_base
    from omegaconf import OmegaConf

    trainer_class = ray_trainer.RayPPOTrainer if trainer_kind == "legacy" else trainer_base.PPOTrainer
    counts = {("3f2a", "12"): 3, ("3f2a", None): 1, ("9b01", "7"): 2}

    class Loader:
        def __len__(self):
            return 7

        def state_dict(self):
            return {"epoch": 0}

        def load_state_dict(self, state):
            pass

    def trainer_at(step, folder):
        config = OmegaConf.create({"trainer": {
            "default_local_dir": str(folder), "default_hdfs_dir": None, "resume_mode": "auto", "resume_from_path": None,
            "del_local_ckpt_after_load": False, "max_actor_ckpt_to_keep": None, "max_critic_ckpt_to_keep": None},
            "actor_rollout_ref": {"actor": {"checkpoint": {"async_save": False}}}})
        return types.SimpleNamespace(
            config=config, global_steps=step, use_critic=False, trainer_mode="sync",
            actor_rollout_wg=types.SimpleNamespace(save_checkpoint=lambda *a, **k: None, load_checkpoint=lambda *a, **k: None),
            train_dataloader=Loader(),
            checkpoint_callback=types.SimpleNamespace(on_save=lambda **kwargs: None))

    for hooked, folder in ((True, tmp_path / "hooked"), (False, tmp_path / "plain")):
        save, load = trainer_class._save_checkpoint, trainer_class._load_checkpoint
        if not hooked:
            save, load = save.rlvr_explore_original, load.rlvr_explore_original
        monkeypatch.setattr(plugin.STATE.driver, "answer_counts", dict(counts))
        save(trainer_at(40, folder))
        assert (folder / "latest_checkpointed_iteration.txt").read_text() == "40"
        monkeypatch.setattr(plugin.STATE.driver, "answer_counts", {})
        resumed = trainer_at(0, folder)
        load(resumed)
        assert resumed.global_steps == 40
        assert plugin.STATE.driver.answer_counts == (counts if hooked else {})


def fresh_verl(script: str, **environment) -> "subprocess.CompletedProcess":
    """``script`` in a new Python process that imports verl itself (the plugin only as verl loads it)."""
    import subprocess
    import sys

    env = {**os.environ, "RLVR_EXPLORE_HP": "", **environment}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)


ENTRY_POINT_PROBE = """
import json, sys
import verl
from verl.trainer.ppo import core_algos
import verl.trainer.ppo.ray_trainer as legacy, verl.trainer.ppo.v1.trainer_base as v1
import verl.workers.engine.fsdp.transformer_impl as engine, verl.workers.utils.losses as worker_losses
hooks = {"v1._compute_advantage": v1.PPOTrainer._compute_advantage, "v1._update_actor": v1.PPOTrainer._update_actor,
         "v1._save_checkpoint": v1.PPOTrainer._save_checkpoint, "v1.init": v1.PPOTrainer.init,
         "legacy._update_actor": legacy.RayPPOTrainer._update_actor, "compute_advantage": legacy.compute_advantage,
         "prepare_model_outputs": engine.FSDPEngineWithLMHead.prepare_model_outputs,
         "train_batch": engine.FSDPEngineWithLMHead.train_batch, "ppo_loss": worker_losses.ppo_loss}
print(json.dumps({"loaded": "rlvr_explore.integrations.verl" in sys.modules,
                  "registered": "rlvr_casp" in core_algos.POLICY_LOSS_REGISTRY,
                  "hooked": sorted(k for k, f in hooks.items() if hasattr(f, "rlvr_explore_original"))}))
"""


@pytest.mark.parametrize("policy, loaded", [("auto", True), ("rlvr_explore", True), ("none", False)])
def test_real_verl_loads_the_plugin_through_its_entry_point_alone(policy, loaded):
    """A fresh ``import verl``, nothing of rlvr-explore imported by hand: verl's entry-point discovery
    loads the plugin (unless VERL_USE_EXTERNAL_PLUGINS says not to), which registers and hooks both
    trainers and the workers' code as each module is imported."""
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    run = fresh_verl(ENTRY_POINT_PROBE, VERL_USE_EXTERNAL_PLUGINS=policy)
    assert run.returncode == 0, run.stderr[-3000:]
    probe = json.loads(run.stdout.strip().splitlines()[-1])
    hooks = ["compute_advantage", "legacy._update_actor", "ppo_loss", "prepare_model_outputs", "train_batch",
             "v1._compute_advantage", "v1._save_checkpoint", "v1._update_actor", "v1.init"]
    assert probe == {"loaded": loaded, "registered": loaded, "hooked": hooks if loaded else []}


CHANGED_SEAMS = """
import json, logging, os
os.environ["VERL_USE_EXTERNAL_PLUGINS"] = "none"  # change verl first, as a newer release would have it
import verl
import verl.workers.utils.losses as worker_losses
import verl.trainer.ppo.v1.trainer_base as v1
verl_ppo_loss, verl_update_actor = worker_losses.ppo_loss, v1.PPOTrainer._update_actor
def ppo_loss(config, model_output, data, dp_group=None, loss_scale=1.0):
    return verl_ppo_loss(config, model_output, data, dp_group)
def _update_actor(self, batch, metrics, timing):
    return verl_update_actor(self, batch, metrics)
worker_losses.ppo_loss, v1.PPOTrainer._update_actor = ppo_loss, _update_actor
import rlvr_explore.integrations.verl_entry
from rlvr_explore.integrations import verl as plugin
from omegaconf import OmegaConf
untouched = worker_losses.ppo_loss is ppo_loss and v1.PPOTrainer._update_actor is _update_actor
def config(mode):
    return OmegaConf.create({"actor_rollout_ref": {"actor": {"strategy": "fsdp", "policy_loss": {"loss_mode": mode}},
                                                   "model": {"use_fused_kernels": False}},
                             "algorithm": {"adv_estimator": "grpo", "rollout_correction": None}})
outcomes = {}
for mode in ("vanilla", "rlvr_grpo", "rlvr_casp"):
    try:
        plugin.check_run(config(mode), plugin.V1)
        outcomes[mode] = "runs"
    except RuntimeError as error:
        outcomes[mode] = str(error)
os.environ["RLVR_EXPLORE_HP"] = json.dumps({"dph_rehearsal": "set.pt"})
try:
    plugin.check_run(config("rlvr_grpo"), plugin.V1)
    outcomes["dph"] = "runs"
except RuntimeError as error:
    outcomes["dph"] = str(error)
print(json.dumps({"untouched": untouched, "refused": sorted(plugin.STATE.refused), "outcomes": outcomes}))
"""


def test_real_verl_with_changed_seams_is_left_untouched_and_the_runs_that_need_them_stop():
    """verl with two seams changed before the plugin loads (ppo_loss gains a keyword, the v1
    trainer's _update_actor a parameter): both stay verl's own, each is named at WARNING with verl's
    version, verl's own loss mode and our log-prob losses still run, and CaSP and DPH-RL stop at
    start-up naming the seam."""
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    run = fresh_verl(CHANGED_SEAMS)
    assert run.returncode == 0, run.stderr[-3000:]
    probe = json.loads(run.stdout.strip().splitlines()[-1])
    assert probe["untouched"] and probe["refused"] == ["verl.trainer.ppo.v1.trainer_base.PPOTrainer._update_actor",
                                                       "verl.workers.utils.losses.ppo_loss"]
    for seam, keyword in (("verl.workers.utils.losses.ppo_loss", "loss_scale"),
                          ("verl.trainer.ppo.v1.trainer_base.PPOTrainer._update_actor", "timing")):
        assert f"left verl 0.9.1's {seam} alone" in run.stderr and keyword in run.stderr
    outcomes = probe["outcomes"]
    assert outcomes["vanilla"] == "runs" and outcomes["rlvr_grpo"] == "runs"
    assert "loss_mode=rlvr_casp needs rlvr-explore's hook on verl.workers.utils.losses.ppo_loss" in outcomes["rlvr_casp"]
    assert "dph_rehearsal needs rlvr-explore's hook on verl.trainer.ppo.v1.trainer_base.PPOTrainer._update_actor" \
        in outcomes["dph"]


def test_real_verl_says_why_the_plugin_did_not_load():
    """verl itself logs a failed plugin at DEBUG; the entry point says it at WARNING and verl goes on."""
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    run = fresh_verl("import sys; sys.modules['rlvr_explore.losses'] = None\n"
                     "import verl\nfrom verl.trainer.ppo import core_algos\n"
                     "print('rlvr_casp' in core_algos.POLICY_LOSS_REGISTRY)")
    assert run.returncode == 0 and run.stdout.strip().splitlines()[-1] == "False"
    assert "rlvr-explore's verl plugin did not load" in run.stderr and "rlvr_explore.losses" in run.stderr


def main_ppo(tmp_path, *overrides) -> str:
    """verl's own ``python -m verl.trainer.main_ppo`` on this machine, with a tiny Qwen2 and a
    parquet saved here: Ray, the task runner and the trainer start; without a GPU verl stops when it
    reserves its workers' GPUs, after the trainer's start-up (what a CPU allows). Its output."""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    if not (tmp_path / "model").exists():
        tokenizer = __import__("rlvr_explore.models", fromlist=["char_tokenizer"]).char_tokenizer("0123456789+= ")
        tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}={% endif %}"
        model = tiny_hf_model(len(tokenizer))
        model.save_pretrained(tmp_path / "model")
        tokenizer.save_pretrained(tmp_path / "model")
        rows = [{"data_source": "toy", "prompt": [{"role": "user", "content": f"{a}+{b}"}],
                 "reward_model": {"ground_truth": str(a + b)}, "extra_info": {"index": 4 * a + b}}
                for a in range(4) for b in range(4)]
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    command = [sys.executable, "-m", "verl.trainer.main_ppo", f"data.train_files={tmp_path / 'train.parquet'}",
               f"data.val_files={tmp_path / 'train.parquet'}", "data.train_batch_size=4", "data.max_prompt_length=16",
               "data.max_response_length=8", f"actor_rollout_ref.model.path={tmp_path / 'model'}",
               "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
               "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
               "trainer.n_gpus_per_node=1", "trainer.nnodes=1", "trainer.logger=[console]", "trainer.total_epochs=1",
               f"trainer.default_local_dir={tmp_path / 'checkpoints'}", "ray_kwargs.ray_init.num_cpus=16",
               "transfer_queue.backend.SimpleStorage.num_data_storage_units=1", *overrides]
    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "RAY_AUTH_MODE": "disabled", "RLVR_EXPLORE_HP": ""})
    return run.stdout + run.stderr


def test_real_verl_main_ppo_runs_the_start_up_check_in_its_trainer_process(tmp_path):
    """verl's default main_ppo (the v1 trainer in Ray's task runner) with CaSP and GTPO: the plugin,
    loaded by verl itself in that process, checks the run and names every hook the methods use there
    and in the workers; the same start with the legacy trainer and fused kernels stops before any
    worker is asked for, naming the trainer and the setting."""
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    pytest.importorskip("transfer_queue", reason="verl's default trainer needs verl[verl-core]")
    output = main_ppo(tmp_path, "actor_rollout_ref.actor.policy_loss.loss_mode=rlvr_casp",
                      "algorithm.adv_estimator=rlvr_gtpo")
    line = next((l for l in output.splitlines() if "rlvr-explore on verl 0.9.1's v1 (trainer.use_v1=true" in l), None)
    assert line is not None, output[-4000:]
    for seam in plugin.SEAMS:
        used = seam.serves in ("losses", "statistics", "candidates", "advantage_inputs") and seam.trainer in (None, plugin.V1)
        assert (seam.name in line) == used, (seam.name, line)
    assert "Total available GPUs 0 is less than total desired GPUs 1" in output  # the next thing verl does

    output = main_ppo(tmp_path, "trainer.use_v1=false", "algorithm.adv_estimator=grpo",
                      "actor_rollout_ref.actor.policy_loss.loss_mode=rlvr_casp",
                      "actor_rollout_ref.model.use_fused_kernels=True")
    assert ("rlvr-explore cannot serve this run on verl's legacy (trainer.use_v1=false) trainer: "
            "actor_rollout_ref.actor.policy_loss.loss_mode=rlvr_casp needs the logits: set "
            "actor_rollout_ref.model.use_fused_kernels=False") in output, output[-4000:]
    assert "Total available GPUs" not in output


def test_real_verl_registers_through_its_entry_point_and_matches_its_own_losses():
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    import verl  # noqa: F401  (the import runs verl's entry-point discovery)
    from omegaconf import OmegaConf
    from verl.trainer.ppo import core_algos

    assert {f"rlvr_{m}" for m in losses.available()} <= set(core_algos.POLICY_LOSS_REGISTRY)
    assert {f"rlvr_{e}" for e in plugin.ESTIMATORS} <= set(core_algos.ADV_ESTIMATOR_REGISTRY)

    for dual_clip in (3.0, 1e9):  # verl's default dual clip, and none in effect
        config = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2,
                                   "clip_ratio_c": dual_clip, "global_batch_info": {"dp_size": 1},
                                   "policy_loss": {"loss_mode": "vanilla"}})
        for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"):
            old, new, adv, mask = batch(2)
            old = new.detach() - 1.5 * torch.rand(B, T, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
            assert ((adv < 0) & ((new - old).exp() > 3)).any()  # the dual clip binds somewhere
            ours, _ = core_algos.get_policy_loss_fn("rlvr_grpo")(old, new, adv, mask, mode, config, None)
            (our_grad,) = torch.autograd.grad(ours, new)
            theirs, _ = core_algos.get_policy_loss_fn("vanilla")(old, new, adv, mask, mode, config, None)
            (their_grad,) = torch.autograd.grad(theirs, new)
            torch.testing.assert_close(ours, theirs)
            torch.testing.assert_close(our_grad, their_grad)

    rewards = torch.zeros(B, T)
    rewards[:, -1] = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    index = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    ours, _ = core_algos.get_adv_estimator_fn("rlvr_grpo")(token_level_rewards=rewards, response_mask=torch.ones(B, T),
                                                          index=index, config=None)
    theirs, _ = core_algos.compute_grpo_outcome_advantage(token_level_rewards=rewards, response_mask=torch.ones(B, T),
                                                          index=index)
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-5, atol=1e-5)
    reference = compute_advantages("grpo", rewards.sum(-1), torch.tensor([0, 0, 0, 1, 1, 1]), torch.ones(B, T))
    torch.testing.assert_close(ours, reference)
    os.environ["RLVR_EXPLORE_HP"] = '{"pkpo_k": 2}'  # how the plugin takes hyper-parameters
    try:
        for estimator, hp in (("maxrl", {}), ("pkpo", {"pkpo_k": 2})):  # the next wave, through verl's registry
            ours, _ = core_algos.get_adv_estimator_fn(f"rlvr_{estimator}")(
                token_level_rewards=rewards, response_mask=torch.ones(B, T), index=index, config=None)
            reference = compute_advantages(estimator, rewards.sum(-1), torch.tensor([0, 0, 0, 1, 1, 1]),
                                           torch.ones(B, T), **hp)
            torch.testing.assert_close(ours, reference)
    finally:
        del os.environ["RLVR_EXPLORE_HP"]


# ------------------------------------------- the model-output hook inside verl's own FSDP engine code


class TinyPackedModel(torch.nn.Module):
    """Logits of a packed sequence from each position's token alone: enough to tell whether verl's
    packing, micro-batching and our hook hand every statistic to the right response token."""

    def __init__(self, vocab, width=6):
        super().__init__()
        g = torch.Generator().manual_seed(11)
        self.embed = torch.nn.Parameter(torch.randn(vocab, width, generator=g, dtype=torch.float64))
        self.head = torch.nn.Parameter(torch.randn(vocab, width, generator=g, dtype=torch.float64))

    def forward(self, ids):
        return self.embed[ids] @ self.head.t()


def verl_batch(model, vocab, seed=0):
    """A padded rollout batch (left-padded prompts, right-padded responses) in verl's no-padding
    layout, as the actor receives it. The negative responses are the model's greedy tokens, so
    CaSP's rank-1 penalty has tokens to act on."""
    from tensordict import TensorDict
    from verl.workers.utils.padding import left_right_2_no_padding

    g = torch.Generator().manual_seed(seed)
    prompt_lens, response_lens = torch.tensor([3, 2, 3, 1, 2, 3]), torch.tensor([5, 3, 4, 2, 5, 1])
    P, R, n = 3, 5, 6
    prompt_mask = (torch.arange(P)[None] >= P - prompt_lens[:, None]).long()
    response_mask = (torch.arange(R)[None] < response_lens[:, None]).long()
    prompts = torch.randint(1, vocab, (n, P), generator=g) * prompt_mask
    responses = torch.randint(1, vocab, (n, R), generator=g)
    for row in (1, 3, 5):
        previous = prompts[row, -1]
        for j in range(R):
            previous = responses[row, j] = model(previous).argmax()
    responses = responses * response_mask
    attention = torch.cat([prompt_mask, response_mask], 1)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 1.0, -1.0])[:, None].expand(n, R) * response_mask
    data = TensorDict({"prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], 1),
                       "attention_mask": attention, "position_ids": (attention.cumsum(1) - 1).clamp(min=0),
                       "response_mask": response_mask.float(),
                       "old_log_probs": (-0.5 - torch.rand(n, R, generator=g)) * response_mask,
                       "advantages": advantages.contiguous()}, batch_size=[n])
    return left_right_2_no_padding(data)


def padded_logits(packed_logits, data):
    """(B, R, V): the logits that produced each response token, gathered from the packed sequence."""
    lengths = data["input_ids"].offsets().diff()
    response_lens = data["response_mask"].sum(1).long()
    ends = data["input_ids"].offsets()[1:]
    out = packed_logits.new_zeros(len(lengths), data["response_mask"].shape[1], packed_logits.shape[-1])
    for i, (end, r) in enumerate(zip(ends.tolist(), response_lens.tolist())):
        out[i, :r] = packed_logits[end - r - 1 : end - 1]
    return out


def single_rank_engine(model):
    """verl's FSDPEngineWithLMHead on one CPU rank: the optimizer, FSDP and the data-parallel group
    replaced; train_batch, infer_batch, forward_backward_batch and prepare_model_outputs are verl's,
    with our hooks."""
    import verl.workers.engine.fsdp.transformer_impl as impl

    class SingleRankEngine(impl.FSDPEngineWithLMHead):
        def __init__(self):
            self.use_ulysses_sp, self.ulysses_sequence_parallel_size = False, 1
            self.engine_config = types.SimpleNamespace(entropy_checkpointing=False, entropy_from_logits_with_chunking=False)

        def get_data_parallel_group(self):
            return None

        def get_data_parallel_size(self):
            return 1

        def get_data_parallel_rank(self):
            return 0

        def is_mp_src_rank_with_outputs(self):
            return True

        def optimizer_zero_grad(self):
            model.zero_grad(set_to_none=True)

        def optimizer_step(self):
            return 0.0

        def _gradient_sync_context(self, is_last_micro_batch):
            return contextlib.nullcontext()

    return SingleRankEngine


def cpu_engine(model):
    """``single_rank_engine`` whose model forward is TinyPackedModel on the packed ids."""
    from verl.utils import tensordict_utils as tu

    class CPUEngine(single_rank_engine(model)):
        def forward_step(self, micro_batch, loss_function, forward_only):
            ids = micro_batch["input_ids"].values()
            output_args = {"input_ids_rmpad_rolled": torch.roll(ids, -1), "pad_size": 0, "temperature_is_one": True,
                           "temperature_rmpad": torch.ones(ids.shape[0], dtype=torch.float64),
                           "temperature": torch.ones(len(micro_batch), dtype=torch.float64)}
            if tu.get_non_tensor_data(micro_batch, "use_remove_padding", True):
                logits = model(ids)[None]  # one packed sequence
            else:  # right-padded sequences
                logits = model(torch.nested.to_padded_tensor(micro_batch["input_ids"], 0))
            model_output = self.prepare_model_outputs(types.SimpleNamespace(logits=logits), output_args, micro_batch,
                                                      loss_function)
            loss, metrics = loss_function(model_output=model_output, data=micro_batch)
            return loss, {"model_output": {k: v.detach() for k, v in model_output.items()}, "loss": loss.item(),
                          "metrics": metrics}

    return CPUEngine()


@pytest.mark.parametrize("method, hp, remove_padding, dynamic_bsz", [
    ("casp", {}, True, False),                                   # per-response gate: no extra pass
    ("casp", {}, False, False),                                  # verl's padded (no rmpad) branch
    ("casp", {"quantile_scope": "batch", "q": 0.5}, True, False),
    ("forking", {"q": 0.6}, True, False),                        # batch-wide entropy gate over the mini-batch
    ("forking", {"q": 0.6}, True, True),                         # micro-batches regrouped by token count
    ("kl_cov", {"kl_cov_ratio": 0.2, "kl_cov_coef": 1.0}, True, False),
])
def test_real_verl_fsdp_engine_with_the_hook_equals_the_core_loss_on_the_whole_batch(method, hp, remove_padding,
                                                                                    dynamic_bsz, monkeypatch):
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    import torch.distributed as dist
    import verl  # noqa: F401
    import verl.workers.engine.fsdp.transformer_impl as impl
    import verl.workers.utils.losses as verl_losses
    from functools import partial
    from omegaconf import OmegaConf
    from verl.utils import tensordict_utils as tu

    assert hasattr(verl_losses.ppo_loss, "rlvr_explore_original")  # patched by the post-import hook
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    monkeypatch.setattr(impl, "get_device_id", lambda: "cpu")
    monkeypatch.setenv("RLVR_EXPLORE_HP", json.dumps(hp))
    vocab = 17
    model = TinyPackedModel(vocab)
    data = verl_batch(model, vocab)
    tu.assign_non_tensor(data, use_remove_padding=remove_padding, use_dynamic_bsz=dynamic_bsz, micro_batch_size_per_gpu=2,
                         max_token_len_per_gpu=16,
                         calculate_entropy=False, global_batch_size=len(data))
    config = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "loss_agg_mode": "token-mean",
                               "policy_loss": {"loss_mode": f"rlvr_{method}"}, "global_batch_info": {},
                               "loss_scale_factor": None, "entropy_coeff": 0.0, "use_kl_loss": False})
    output = cpu_engine(model).train_batch(data, loss_function=partial(verl_losses.ppo_loss, config=config))
    verl_grads = [p.grad.clone() for p in model.parameters()]
    assert len(output["loss"]) >= 3  # micro-batches of two responses, or of at most 16 tokens
    if method == "casp":  # the rank-1 penalty acted, and Lambda^(n) reached verl's metrics
        assert output["metrics"]["actor/top1_penalised_frac"].aggregate() > 0
        assert output["metrics"]["actor/lambda1"].aggregate() > output["metrics"]["actor/lambda3"].aggregate()

    model.zero_grad()
    logits = padded_logits(model(data["input_ids"].values()), data)
    mask = data["response_mask"].bool()
    stats = token_stats(logits, data["responses"], top_n=3)
    expected, _ = losses.policy_loss(
        method, logp=stats.logp, old_logp=data["old_log_probs"].double(), advantages=data["advantages"].double(),
        response_mask=mask, response_ids=data["responses"], topn_logp=stats.topn_logp, topn_ids=stats.topn_ids,
        entropy=stats.entropy, loss_agg_mode="token-mean", **plugin.loss_hyperparameters(method, config))
    expected.backward()
    torch.testing.assert_close(sum(output["loss"]), expected.item())
    for ours, reference in zip(verl_grads, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(ours, reference)



def tiny_hf_model(vocab: int):
    """A real transformers causal LM (Qwen2's architecture, grouped-query attention) with random weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("qwen2", vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(5)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")


def hf_engine(model, autocast_dtype):
    """``single_rank_engine`` whose own forward_step runs: verl's prepare_model_inputs (packing or
    padding, temperature per token), the model under its autocast, prepare_model_outputs and the
    loss."""
    class Engine(single_rank_engine(model)):
        def __init__(self):
            super().__init__()
            self.module, self._autocast_dtype, self.pad_to_length = model, autocast_dtype, False

        def _get_packed_pad_size(self, length):
            return 0

    return Engine()


@pytest.mark.parametrize("method, hp, temperature, autocast, remove_padding", [
    ("casp", {}, 1.0, torch.float32, True),
    ("casp", {}, 0.6, torch.bfloat16, True),
    ("casp", {}, 0.6, torch.float32, False),
    ("casp_softmax", {}, 0.6, torch.float32, True),
    ("casp_softmax", {}, 1.0, torch.bfloat16, False),
    ("forking", {"q": 0.6}, 0.6, torch.float32, True),
    ("forking", {"q": 0.6}, 1.0, torch.bfloat16, True),
    ("clip_cov", {"clip_cov_ratio": 0.3}, 0.6, torch.float32, True),
    ("clip_cov", {"clip_cov_ratio": 0.3}, 1.0, torch.bfloat16, False),
])
def test_real_verl_input_preparation_with_a_real_model_gives_the_core_loss(method, hp, temperature, autocast,
                                                                          remove_padding, monkeypatch):
    """A real Hugging Face model through verl's own forward_step (input preparation, packing or
    padding, autocast, temperature) with our hooks: the loss and gradient equal the core's from the
    model's own logits, one response at a time, at the same temperature and autocast."""
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    import torch.distributed as dist
    import verl.workers.engine.fsdp.transformer_impl as impl
    import verl.workers.utils.losses as verl_losses
    from functools import partial
    from omegaconf import OmegaConf
    from verl.utils import tensordict_utils as tu

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    monkeypatch.setattr(impl, "get_device_id", lambda: "cpu")
    monkeypatch.setattr(impl, "get_device_name", lambda: "cpu")
    monkeypatch.setenv("RLVR_EXPLORE_HP", json.dumps(hp))
    vocab = 17
    model = tiny_hf_model(vocab)
    data = verl_batch(TinyPackedModel(vocab), vocab)
    tu.assign_non_tensor(data, use_remove_padding=remove_padding, use_dynamic_bsz=False, micro_batch_size_per_gpu=2,
                         calculate_entropy=False, global_batch_size=len(data), temperature=temperature)
    config = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "loss_agg_mode": "token-mean",
                               "policy_loss": {"loss_mode": f"rlvr_{method}"}, "global_batch_info": {},
                               "loss_scale_factor": None, "entropy_coeff": 0.0, "use_kl_loss": False})
    output = hf_engine(model, autocast).train_batch(data, loss_function=partial(verl_losses.ppo_loss, config=config))
    verl_grads = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    response_lens = data["response_mask"].sum(1).long().tolist()
    logits = torch.zeros(len(response_lens), data["response_mask"].shape[1], vocab)
    rows = []
    for i, r in enumerate(response_lens):
        ids = data["input_ids"][i]
        with torch.autocast("cpu", dtype=autocast, enabled=autocast != torch.float32):
            row = model(input_ids=ids[None], position_ids=torch.arange(len(ids))[None]).logits[0, -r - 1 : -1]
        rows.append(torch.nn.functional.pad(row.float(), (0, 0, 0, logits.shape[1] - r)))
    logits = torch.stack(rows)
    mask = data["response_mask"].bool()
    stats = token_stats(logits, data["responses"], top_n=3, temperature=temperature)
    expected, _ = losses.policy_loss(
        method, logp=stats.logp, old_logp=data["old_log_probs"].double(), advantages=data["advantages"].double(),
        response_mask=mask, response_ids=data["responses"], topn_logp=stats.topn_logp, topn_ids=stats.topn_ids,
        entropy=stats.entropy, loss_agg_mode="token-mean", **plugin.loss_hyperparameters(method, config))
    expected.backward()
    tolerance = {} if autocast == torch.float32 else {"atol": 2e-2, "rtol": 5e-2}  # bf16 logits, packed or not
    torch.testing.assert_close(torch.tensor(sum(output["loss"])), expected.detach().float(), **tolerance)
    for ours, reference in zip(verl_grads, [p.grad for p in model.parameters()]):
        torch.testing.assert_close(ours, reference, **(tolerance or {"atol": 1e-5, "rtol": 1e-4}))


def response_logp(model, share):
    """(rows, R) log-probs of each share row's response tokens, one unpacked sequence at a time."""
    out = torch.zeros(share["response_ids"].shape, dtype=torch.float64)
    for i in range(len(out)):
        prompt = share["prompt_ids"][i][share["prompt_mask"][i]]
        response = share["response_ids"][i][share["response_mask"][i]]
        logp = torch.log_softmax(model(torch.cat([prompt, response])), -1)
        out[i, : len(response)] = logp[len(prompt) - 1 : -1].gather(1, response[:, None]).squeeze(1)
    return out


@pytest.mark.parametrize("method, hp, divergence, remove_padding, dynamic_bsz", [
    ("grpo", {}, "forward", True, False),
    ("casp", {"quantile_scope": "batch", "q": 0.5}, "js", True, False),  # the batch gate's pass, then the rehearsal
    ("grpo", {}, "alpha", False, False),                                 # verl's padded (no rmpad) branch
    ("grpo", {}, "forward", True, True),                                 # micro-batches by token count
])
def test_real_verl_fsdp_engine_rehearses_each_share_with_the_core_gradient(method, hp, divergence, remove_padding,
                                                                          dynamic_bsz, monkeypatch):
    """verl's own train_batch with the hook: each mini-batch's gradient is the policy loss's plus
    DPH-RL's term on that mini-batch's share of the step's rehearsal rows (the core rehearsal_loss),
    the shares taken in order and again in the next epoch; the term reaches verl's metrics."""
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    import torch.distributed as dist
    import verl  # noqa: F401
    import verl.workers.engine.fsdp.transformer_impl as impl
    import verl.workers.utils.losses as verl_losses
    from functools import partial
    from omegaconf import OmegaConf
    from verl.utils import tensordict_utils as tu

    from rlvr_explore.losses.rehearsal import rehearsal_loss
    from rlvr_explore.losses.rehearsal import DPHConfig

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    monkeypatch.setattr(impl, "get_device_id", lambda: "cpu")
    monkeypatch.setenv("RLVR_EXPLORE_HP", json.dumps(hp))
    monkeypatch.setattr(plugin.STATE, "actor", plugin.ActorState())
    vocab = 17
    model = TinyPackedModel(vocab)
    dph = DPHConfig(enabled=True, divergence=divergence, coef=0.05, chunk=6)
    chunk = plugin.draw_rehearsal_chunk(rehearsal_set(rows=6, vocab=vocab), dph, mini_batches=2, seed=0, step=7)
    config = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "loss_agg_mode": "token-mean",
                               "policy_loss": {"loss_mode": f"rlvr_{method}"}, "global_batch_info": {},
                               "loss_scale_factor": None, "entropy_coeff": 0.0, "use_kl_loss": False})

    data = verl_batch(model, vocab)
    logits = padded_logits(model(data["input_ids"].values()), data)
    stats = token_stats(logits, data["responses"], top_n=3)
    policy, _ = losses.policy_loss(
        method, logp=stats.logp, old_logp=data["old_log_probs"].double(), advantages=data["advantages"].double(),
        response_mask=data["response_mask"].bool(), response_ids=data["responses"], topn_logp=stats.topn_logp,
        topn_ids=stats.topn_ids, entropy=stats.entropy, loss_agg_mode="token-mean", **plugin.loss_hyperparameters(method, config))
    policy_grads = torch.autograd.grad(policy, list(model.parameters()))

    engine = cpu_engine(model)
    for share in (chunk.shares[0], chunk.shares[1], chunk.shares[0]):  # mini-batches 1 and 2, then the next epoch's 1
        data = verl_batch(model, vocab)
        tu.assign_non_tensor(data, use_remove_padding=remove_padding, use_dynamic_bsz=dynamic_bsz, micro_batch_size_per_gpu=2,
                             max_token_len_per_gpu=12, calculate_entropy=False, global_batch_size=len(data),
                             rlvr_rehearsal=chunk)
        output = engine.train_batch(data, loss_function=partial(verl_losses.ppo_loss, config=config))
        assert "forward_backward_batch" not in vars(engine)  # verl's own method again after the step
        term = rehearsal_loss(response_logp(model, share), share["ref_logp"], share["response_mask"], dph.coef,
                              dph.divergence, dph.alpha)
        rehearsal_grads = torch.autograd.grad(term, list(model.parameters()))
        assert len(share["ref_logp"]) == 3 and term.item() > 1e-4  # two micro-batches of rehearsal, a non-zero term
        torch.testing.assert_close(output["metrics"][plugin.REHEARSAL_METRIC].aggregate(), term.item())
        for ours, from_policy, from_rehearsal in zip(model.parameters(), policy_grads, rehearsal_grads):
            torch.testing.assert_close(ours.grad, from_policy + from_rehearsal)


def _rehearse_on_two_ranks(rank, store_path, chunk, results):
    """One data-parallel rank of verl's train_batch with the hook: the same policy batch on both,
    this rank's half of the rehearsal share; its gradients go back to the parent."""
    import torch.distributed as dist
    import verl  # noqa: F401
    import verl.workers.engine.fsdp.transformer_impl as impl
    import verl.workers.utils.losses as verl_losses
    from functools import partial
    from omegaconf import OmegaConf
    from verl.utils import tensordict_utils as tu

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    impl.get_device_id = lambda: "cpu"
    model = TinyPackedModel(17)
    engine = cpu_engine(model)
    engine.get_data_parallel_size, engine.get_data_parallel_rank = (lambda: 2), (lambda: rank)
    data = verl_batch(model, 17)
    tu.assign_non_tensor(data, use_remove_padding=True, use_dynamic_bsz=False, micro_batch_size_per_gpu=2,
                         calculate_entropy=False, global_batch_size=len(data), rlvr_rehearsal=chunk)
    config = OmegaConf.create({"clip_ratio": 0.2, "loss_agg_mode": "token-mean", "policy_loss": {"loss_mode": "rlvr_grpo"},
                               "global_batch_info": {}, "loss_scale_factor": None, "entropy_coeff": 0.0, "use_kl_loss": False})
    engine.train_batch(data, loss_function=partial(verl_losses.ppo_loss, config=config))
    results[rank] = [p.grad.clone() for p in model.parameters()]
    dist.destroy_process_group()


def test_real_verl_rehearsal_over_two_data_parallel_ranks_averages_to_the_core_gradient(tmp_path):
    """Two gloo ranks, each with half of the share's rows (of different lengths): the mean of their
    gradients, which FSDP applies, is the policy gradient plus the core rehearsal_loss gradient on
    the whole share, the token mean over both ranks' rehearsal tokens."""
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    import torch.multiprocessing as mp

    from rlvr_explore.losses.rehearsal import rehearsal_loss
    from rlvr_explore.losses.rehearsal import DPHConfig

    dph = DPHConfig(enabled=True, divergence="forward", coef=0.05, chunk=4)
    chunk = plugin.draw_rehearsal_chunk(rehearsal_set(rows=4, vocab=17), dph, mini_batches=1, seed=0, step=1)
    share = chunk.shares[0]
    assert share["response_mask"][:2].sum() != share["response_mask"][2:].sum()  # the ranks hold unequal token counts
    results = mp.Manager().dict()
    mp.spawn(_rehearse_on_two_ranks, args=(str(tmp_path / "store"), chunk, results), nprocs=2)

    model = TinyPackedModel(17)
    data = verl_batch(model, 17)
    logits = padded_logits(model(data["input_ids"].values()), data)
    policy, _ = losses.policy_loss(
        "grpo", logp=token_stats(logits, data["responses"]).logp, old_logp=data["old_log_probs"].double(),
        advantages=data["advantages"].double(), response_mask=data["response_mask"].bool(), loss_agg_mode="token-mean",
        **plugin.loss_hyperparameters("grpo", {"clip_ratio": 0.2}))
    term = rehearsal_loss(response_logp(model, share), share["ref_logp"], share["response_mask"], dph.coef)
    (policy + term).backward()
    for rank0, rank1, reference in zip(results[0], results[1], model.parameters()):
        torch.testing.assert_close((rank0 + rank1) / 2, reference.grad)


@pytest.mark.parametrize("trainer_kind", ["legacy", "v1"])
def test_real_verl_driver_update_reaches_the_actor_with_each_mini_batchs_share(trainer_kind, tmp_path, monkeypatch):
    """verl's own _update_actor (hooked: RayPPOTrainer's, or the v1 PPOTrainer's that verl runs by
    default) and TrainingWorker.train_mini_batch / train_batch over the CPU engine: the step's
    rehearsal rows travel in the batch's metadata through verl's conversion (legacy: meta_info in
    to_tensordict; v1: extra_info, which verl's dispatch puts beside the TransferQueue fields) and
    mini-batch iterator, each mini-batch rehearses its share, and the term comes back in verl's
    metrics, where the driver looks for it."""
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    import copy

    import torch.distributed as dist
    import verl.trainer.ppo.ray_trainer as ray_trainer
    import verl.trainer.ppo.v1.trainer_base as trainer_base
    import verl.workers.engine.fsdp.transformer_impl as impl
    import verl.workers.engine_workers as engine_workers
    import verl.workers.utils.losses as verl_losses
    from functools import partial
    from omegaconf import OmegaConf
    from tensordict import TensorDict
    from transfer_queue.metadata import KVBatchMeta
    from verl import DataProto
    from verl.utils import tensordict_utils
    from verl.utils.metric import reduce_metrics
    from verl.workers.utils.padding import left_right_2_no_padding

    from rlvr_explore.losses.rehearsal import rehearsal_loss

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    monkeypatch.setattr(impl, "get_device_id", lambda: "cpu")
    monkeypatch.setattr(engine_workers, "get_torch_device", lambda: types.SimpleNamespace(
        max_memory_allocated=lambda: 0, max_memory_reserved=lambda: 0))
    monkeypatch.setattr(plugin.STATE, "driver", plugin.DriverState())
    monkeypatch.setattr(plugin.STATE, "actor", plugin.ActorState())
    stored = rehearsal_set(rows=8, vocab=17)
    torch.save(stored, tmp_path / "rehearsal.pt")
    monkeypatch.setenv("RLVR_EXPLORE_HP", json.dumps({"dph_rehearsal": str(tmp_path / "rehearsal.pt"), "dph_chunk": 4,
                                                      "dph_coef": 0.1}))
    model = TinyPackedModel(17)
    actor_config = OmegaConf.create({"clip_ratio": 0.2, "loss_agg_mode": "token-mean", "policy_loss": {"loss_mode": "rlvr_grpo"},
                                     "global_batch_info": {}, "loss_scale_factor": None, "entropy_coeff": 0.0,
                                     "use_kl_loss": False})
    grads = []

    class Engine(type(cpu_engine(model))):
        @contextlib.contextmanager
        def train_mode(self, **kwargs):
            yield

        def optimizer_step(self):
            grads.append([p.grad.clone() for p in model.parameters()])
            return 0.0

        def lr_scheduler_step(self):
            return 1e-6

    worker = types.SimpleNamespace(
        engine=Engine(), loss_fn=partial(verl_losses.ppo_loss, config=actor_config), device_name="cpu",
        engine_config=types.SimpleNamespace(forward_only=False, use_dynamic_bsz=False, max_token_len_per_gpu=64,
                                            micro_batch_size_per_gpu=1, use_fused_kernels=False),
        model_config={"use_remove_padding": True}, flops_counter=types.SimpleNamespace(estimate_flops=lambda *a, **k: (1.0, 2.0)),
        profiler=types.SimpleNamespace(step=lambda: None, rank=0, check_enable=lambda: False))
    for name in ("train_mini_batch", "train_batch", "_postprocess_output"):
        setattr(worker, name, partial(getattr(engine_workers.TrainingWorker, name), worker))
    config = OmegaConf.create({"actor_rollout_ref": {
        "rollout": {"multi_turn": {"enable": False}, "temperature": 1.0, "n": 3},
        "actor": {"calculate_entropy": False, "entropy_coeff": 0.0, "ppo_mini_batch_size": 1, "ppo_epochs": 1,
                  "data_loader_seed": 5, "shuffle": False}}})

    padded = verl_batch(model, 17)  # six responses: two mini-batches of one prompt x three
    rows = {key: padded[key] for key in ("prompts", "responses", "response_mask", "old_log_probs", "advantages")}
    prompt_mask = (torch.arange(3)[None] >= 3 - torch.tensor([3, 2, 3, 1, 2, 3])[:, None]).long()  # as verl_batch
    attention = torch.cat([prompt_mask, rows["response_mask"].long()], 1)
    tensors = {**rows, "input_ids": torch.cat([rows["prompts"], rows["responses"]], 1), "attention_mask": attention,
               "position_ids": (attention.cumsum(1) - 1).clamp(min=0)}
    if trainer_kind == "legacy":
        trainer = types.SimpleNamespace(config=config, actor_rollout_wg=types.SimpleNamespace(
            update_actor=worker.train_mini_batch), global_steps=2)
        batch = DataProto.from_dict(tensors=tensors)
        output = ray_trainer.RayPPOTrainer._update_actor(trainer, batch)
        assert hasattr(ray_trainer.RayPPOTrainer._update_actor, "rlvr_explore_original")  # verl's method, hooked
        assert plugin.REHEARSAL_KEY not in batch.meta_info
        logged = reduce_metrics(output.meta_info["metrics"])  # what fit logs
    else:
        in_queue = left_right_2_no_padding(TensorDict(tensors, batch_size=[6]))  # TransferQueue holds no padding

        def update_actor(meta):  # verl's dispatch: the batch's fields from the queue, extra_info beside them
            data = in_queue.clone()
            for key, value in copy.deepcopy(meta.extra_info).items():
                tensordict_utils.assign_non_tensor_data(tensor_dict=data, key=key, val=value)
            return worker.train_mini_batch(data)

        trainer = types.SimpleNamespace(config=config, actor_rollout_wg=types.SimpleNamespace(update_actor=update_actor),
                                        global_steps=2)
        batch = KVBatchMeta(keys=[f"u{i // 3}_{i}_0" for i in range(6)], tags=[{}] * 6, partition_id="train")
        logged = {}
        trainer_base.PPOTrainer._update_actor(trainer, batch, logged)
        assert hasattr(trainer_base.PPOTrainer._update_actor, "rlvr_explore_original")
        assert plugin.REHEARSAL_KEY not in batch.extra_info

    chunk = plugin.draw_rehearsal_chunk(plugin.load_rehearsal_set(str(tmp_path / "rehearsal.pt")),
                                        plugin.dph_settings()[1], mini_batches=2, seed=5, step=2)
    assert len(grads) == 2
    terms = []
    for mini_batch, share, ours in zip((slice(0, 3), slice(3, 6)), chunk.shares, grads):
        data = verl_batch(model, 17)
        logits = padded_logits(model(data["input_ids"].values()), data)
        keep = data["response_mask"][mini_batch].bool()
        policy, _ = losses.policy_loss(
            "grpo", logp=token_stats(logits, data["responses"]).logp[mini_batch],
            old_logp=data["old_log_probs"][mini_batch].double(), advantages=data["advantages"][mini_batch].double(),
            response_mask=keep, loss_agg_mode="token-mean", **plugin.loss_hyperparameters("grpo", actor_config))
        term = rehearsal_loss(response_logp(model, share), share["ref_logp"], share["response_mask"], 0.1)
        terms.append(term.item())
        expected = torch.autograd.grad(policy + term, list(model.parameters()))
        for got, want in zip(ours, expected):
            torch.testing.assert_close(got, want)
    # summed over the step's mini-batches, as verl's own actor/pg_loss
    torch.testing.assert_close(logged[plugin.REHEARSAL_METRIC], sum(terms))


def test_real_verl_rehearsal_rows_split_over_data_parallel_ranks():
    pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    share = rehearsal_set(rows=6)
    mini_batch = TensorDict({"response_mask": torch.ones(2, 4)}, batch_size=[2])
    tu.assign_non_tensor(mini_batch, temperature=0.7, micro_batch_size_per_gpu=2, calculate_entropy=True)
    parts = [plugin.rehearsal_batch(share, mini_batch, rank, 2, tu) for rank in (0, 1)]
    assert [len(part) for part in parts] == [3, 3]
    assert torch.equal(torch.cat([part["responses"] for part in parts]), share["response_ids"])
    assert tu.get_non_tensor_data(parts[1], "temperature", None) == 0.7  # the rollout temperature of pi_0's log-probs
    assert tu.get_non_tensor_data(parts[1], "calculate_entropy", None) is False
    assert tu.get_non_tensor_data(parts[1], "micro_batch_size_per_gpu", None) == 1  # divides the 3 rows
    with pytest.raises(ValueError, match="6 rehearsal responses .* evenly over 4 data-parallel ranks; set RLVR_EXPLORE_HP dph_chunk"):
        plugin.rehearsal_batch(share, mini_batch, 3, 4, tu)
    per_response = TensorDict({"response_mask": torch.ones(2, 4), "temperature": torch.tensor([0.6, 0.6])}, batch_size=[2])
    assert tu.get_non_tensor_data(plugin.rehearsal_batch(share, per_response, 0, 2, tu), "temperature", None) == pytest.approx(0.6)
    per_response["temperature"] = torch.tensor([0.6, 1.0])
    with pytest.raises(ValueError, match=r"temperatures \[0.6.*, 1.0\].*a single rollout temperature"):
        plugin.rehearsal_batch(share, per_response, 0, 2, tu)


REPOSITORY = __import__("pathlib").Path(__file__).resolve().parents[1]


def documented_verl_commands() -> list[str]:
    """Every verl command of docs/integrations.md and of the plugin's docstrings, as written."""
    import re

    docs = (REPOSITORY / "docs" / "integrations.md").read_text()
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", docs, re.DOTALL) if "verl.trainer.main_ppo" in b]
    config_doc = (REPOSITORY / "src" / "rlvr_explore" / "integrations" / "verl_config.py").read_text()
    blocks += re.findall(r"::\n\n((?:    .*\n)+)", config_doc)
    yaml_doc = (REPOSITORY / "configs" / "verl" / "casp_math.yaml").read_text()
    blocks += ["\n".join(line[1:].strip() for line in re.findall(r"^#   .*$|^#     .*$", yaml_doc, re.MULTILINE))]
    return blocks


def bash_words(command: str) -> list[str]:
    """The words bash makes of ``command`` (quotes, escapes, line continuations, brace expansion,
    $HOME and $PWD), run from the repository root."""
    import subprocess

    script = f"set -- {command}\nprintf '%s\\0' \"$@\""
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPOSITORY,
                         env={"HOME": "/home/user", "PATH": os.environ["PATH"]}, check=True)
    return run.stdout.split("\0")[:-1]


def test_every_documented_verl_command_pastes_into_bash_and_hydra_and_passes_the_start_up_check(monkeypatch):
    """Each command goes through bash as a user's paste would, each override through Hydra's own
    parser, the whole through Hydra's composition with verl's config (or our config file over it),
    and the result through the plugin's start-up check, which reads every hyper-parameter."""
    verl = pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    commands = documented_verl_commands()
    assert len(commands) >= 5  # two on the page with main_ppo, the config file's, verl_config's, the DPH one
    parser = OverridesParser.create()
    for command in commands:
        words = bash_words(command)
        if words[:3] == ["python", "-m", "verl.trainer.main_ppo"]:
            words = words[3:]
        config_dir, config_name = str(__import__("pathlib").Path(verl.__file__).parent / "trainer" / "config"), "ppo_trainer"
        while words and words[0].startswith("--config-"):
            flag, value = words.pop(0), words.pop(0)
            config_dir, config_name = (value, config_name) if flag == "--config-path" else (config_dir, value)
        for word in words:
            parser.parse_override(word)  # raises on what Hydra cannot read
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            cfg = compose(config_name=config_name, overrides=words)
        environment = cfg.get("ray_kwargs", {}).get("ray_init", {}).get("runtime_env", {}).get("env_vars", {})
        monkeypatch.setenv("RLVR_EXPLORE_HP", environment.get("RLVR_EXPLORE_HP", ""))
        assert str(cfg.actor_rollout_ref.actor.policy_loss.loss_mode).startswith("rlvr_") or \
            str(cfg.algorithm.adv_estimator).startswith("rlvr_") or plugin.dph_settings() is not None, command
        for trainer in (plugin.V1, plugin.LEGACY):
            plugin.check_run(cfg, trainer)


def test_documented_casp_hyperparameters_reach_the_loss_and_a_typo_is_named():
    """The CaSP command and config file: `policy_loss.rlvr` reaches `loss_hyperparameters` through
    verl's own dataclass conversion; a typo there is an error."""
    verl = pytest.importorskip("verl", reason="verl not installed: the contract tests above stand in")
    from hydra import compose, initialize_config_dir
    from verl.utils.config import omega_conf_to_dataclass

    casp = [c for c in documented_verl_commands() if "casp_math" in c or "loss_mode=rlvr_casp" in c]
    assert len(casp) >= 2
    for command in casp:
        words = bash_words(command)[3:]
        config_dir = str(__import__("pathlib").Path(verl.__file__).parent / "trainer" / "config")
        config_name = "ppo_trainer"
        if words[0] == "--config-path":
            config_dir, config_name, words = words[1], words[3], words[4:]
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            cfg = compose(config_name=config_name, overrides=words)
            typo = compose(config_name=config_name, overrides=[*words, "++actor_rollout_ref.actor.policy_loss.rlvr.alpah=1"])
        assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "rlvr_casp"
        policy_loss = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)
        assert type(policy_loss).__name__ == "ExplorePolicyLossConfig"
        hp = plugin.loss_hyperparameters("casp", {"clip_ratio": 0.2, "policy_loss": policy_loss})
        assert {k: hp[k] for k in ("alpha", "lam", "top_n", "q")} == {"alpha": 0.01, "lam": 1.1, "top_n": 3, "q": 0.8}
        with pytest.raises(ValueError, match=r"actor.policy_loss.rlvr: \['alpah'\] do not apply to loss 'casp'"):
            plugin.loss_hyperparameters("casp", {"policy_loss": omega_conf_to_dataclass(typo.actor_rollout_ref.actor.policy_loss)})


def test_the_documented_seam_table_is_the_plugins():
    docs = (REPOSITORY / "docs" / "integrations.md").read_text()
    for seam in plugin.SEAMS:
        assert f"| `{seam.module}` | `{seam.attribute}({', '.join(seam.parameters)})` | {plugin.NEEDS[seam.serves]}" in docs
    assert docs.count("  | `verl.") == len(plugin.SEAMS)


def test_dph_prepare_scores_with_verls_default_reward_function_unless_told_otherwise():
    from rlvr_explore.integrations.verl_rehearsal import load_reward_function, verl_verifier

    try:
        from verl.utils.reward_score import default_compute_score
    except ImportError:
        with pytest.raises(ValueError, match="--reward-function FILE:NAME is needed where verl is not installed"):
            load_reward_function(None)
        return
    assert load_reward_function(None) is default_compute_score
    rows = [{"data_source": "openai/gsm8k", "reward_model": {"ground_truth": "42"}, "extra_info": {}}]
    verify = verl_verifier(rows, default_compute_score)
    assert verify([{"row": 0}] * 2, ["so #### 42", "so #### 41"]) == [1.0, 0.0]
