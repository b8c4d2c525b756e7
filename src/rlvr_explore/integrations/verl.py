"""verl plugin: rlvr-explore's log-prob losses and advantage estimators in verl's registries.

Installed as the entry point ``rlvr_explore`` of the group ``verl.plugins``, which verl (0.9.1)
imports in every process on ``import verl``; importing this module registers, under a
``rlvr_`` prefix so verl's own names stay untouched:

* policy losses ``rlvr_<method>`` for every method that needs only log-probs (grpo, dr_grpo, dapo,
  gspo, gspo_n, psr, nsr, w_reinforce, grpo_n, kl_cov, clip_cov), with verl's signature
  ``fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights)
  -> (loss, metrics)`` and aggregation through verl's ``agg_loss`` with ``config.global_batch_info``;
  select one with ``actor_rollout_ref.actor.policy_loss.loss_mode=rlvr_grpo_n``;
* advantage estimators ``rlvr_<name>`` (grpo, dr_grpo, rloo, psr, nsr, w_reinforce, passk_adv)
  with verl's ``fn(token_level_rewards, response_mask, index, config, ...) -> (advantages, returns)``;
  select with ``algorithm.adv_estimator=rlvr_passk_adv``.

Hyper-parameters verl's config already names are read from it (``clip_ratio_low/high``,
``policy_loss.kl_cov_ratio``, ``ppo_kl_coef``, ``clip_cov_*``); the others come from the
environment variable ``RLVR_EXPLORE_HP``, a JSON object such as
``{"w_reinforce_lambda": 0.1, "passk_k": 4}`` (set it in Ray's ``runtime_env.env_vars`` so every
worker sees it). Not here yet: CaSP, forking tokens and the global-batch covariance, which need
entropy and top-N from verl's model-output path (see docs/integrations.md).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from rlvr_explore import advantages as adv_lib
from rlvr_explore import losses

PREFIX = "rlvr_"
LOGPROB_ONLY_LOSSES = ("grpo", "dr_grpo", "dapo", "gspo", "gspo_n", "psr", "nsr", "w_reinforce", "grpo_n", "kl_cov", "clip_cov")
ESTIMATORS = ("grpo", "dr_grpo", "rloo", "psr", "nsr", "w_reinforce", "passk_adv")
VERL_POLICY_LOSS_KEYS = {"kl_cov_ratio": "kl_cov_ratio", "ppo_kl_coef": "kl_cov_coef", "clip_cov_ratio": "clip_cov_ratio",
                         "clip_cov_lb": "clip_cov_lb", "clip_cov_ub": "clip_cov_ub"}


def environment_hyperparameters() -> dict:
    text = os.environ.get("RLVR_EXPLORE_HP", "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"RLVR_EXPLORE_HP is not valid JSON ({error.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"RLVR_EXPLORE_HP must be a JSON object, got {text!r}")
    return value


def _get(config, key, default=None):
    if config is None:
        return default
    getter = getattr(config, "get", None)
    value = getter(key, default) if callable(getter) else getattr(config, key, default)
    return default if value is None else value


def loss_hyperparameters(method: str, config) -> dict:
    """What ``method`` takes, from verl's actor config and RLVR_EXPLORE_HP."""
    spec = losses.get_method(method)
    accepted = set(losses.core.COMMON_KEYS) | set(spec.keys)
    clip = _get(config, "clip_ratio", 0.2)
    hp = {"clip_eps_low": _get(config, "clip_ratio_low", clip), "clip_eps_high": _get(config, "clip_ratio_high", clip)}
    if "clip_eps_low" in spec.defaults and _get(config, "clip_ratio_low") is None and clip == 0.2:
        hp = {}  # GSPO's own 3e-4 / 4e-4 unless the user set the clip
    policy_config = _get(config, "policy_loss")
    for verl_key, key in VERL_POLICY_LOSS_KEYS.items():
        value = _get(policy_config, verl_key)
        if value is not None and key in accepted:
            hp[key] = value
    hp.update({k: v for k, v in environment_hyperparameters().items() if k in accepted})
    return hp


def make_policy_loss(method: str, agg_loss):
    def verl_policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                         rollout_is_weights=None):
        token_loss, _, _, metrics = losses.policy_token_loss(
            method, logp=log_prob, old_logp=old_log_prob, advantages=advantages, response_mask=response_mask.bool(),
            **loss_hyperparameters(method, config))
        if rollout_is_weights is not None:
            token_loss = token_loss * rollout_is_weights
        batch_info = dict(_get(config, "global_batch_info", {}) or {})
        loss = agg_loss(loss_mat=token_loss, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **batch_info)
        return loss, {f"actor/{key}": float(value) for key, value in metrics.items()}

    verl_policy_loss.__name__ = f"rlvr_explore_{method}"
    return verl_policy_loss


def make_advantage_estimator(name: str):
    def verl_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: np.ndarray | None = None,
                       config=None, **kwargs):
        if index is None:
            raise ValueError(f"{PREFIX}{name} needs group ids: verl passes them as `index` from non_tensor_batch['uid']")
        _, group_ids = np.unique(np.asarray(index, dtype=object).astype(str), return_inverse=True)
        accepted = set(adv_lib.ADVANTAGE_CONFIG_KEYS)
        hp = {k: v for k, v in environment_hyperparameters().items() if k in accepted}
        advantages = adv_lib.compute_advantages(
            name, token_level_rewards.sum(-1), torch.as_tensor(group_ids, device=token_level_rewards.device),
            response_mask, **hp).to(token_level_rewards.dtype)
        return advantages, advantages

    verl_advantage.__name__ = f"rlvr_explore_{name}_advantage"
    return verl_advantage


def register(core_algos=None) -> list[str]:
    """Register into verl's registries (or a module with the same two decorators); names added."""
    if core_algos is None:
        from verl.trainer.ppo import core_algos
    added = []
    for method in LOGPROB_ONLY_LOSSES:
        name = PREFIX + method
        if name not in core_algos.POLICY_LOSS_REGISTRY:
            core_algos.register_policy_loss(name)(make_policy_loss(method, core_algos.agg_loss))
            added.append(name)
    for estimator in ESTIMATORS:
        name = PREFIX + estimator
        if name not in core_algos.ADV_ESTIMATOR_REGISTRY:
            core_algos.register_adv_est(name)(make_advantage_estimator(estimator))
            added.append(name)
    return added


try:  # loaded by verl's entry-point discovery: register now; without verl, importing is harmless
    import verl.trainer.ppo.core_algos  # noqa: F401
except ImportError:
    pass
else:
    register()
