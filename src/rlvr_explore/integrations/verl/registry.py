"""Every rlvr-explore loss and estimator as an entry of verl's public registries (``rlvr_<name>``):
verl's signatures, our functions. These need no hook; the statistics and inputs beyond verl's
arguments reach them through the context variables the hooks set."""

from __future__ import annotations

import numpy as np
import torch

from rlvr_explore import advantages as adv_lib
from rlvr_explore import losses
from rlvr_explore.metrics.diagnostics import rank_logprobs

from .settings import ANSWER_KEY, ESTIMATORS, PREFIX, _get, advantage_settings, bound_loss, statistics_needed
from .state import ADVANTAGE_INPUTS, MICRO_BATCH_STATISTICS


def make_policy_loss(method: str, agg_loss):
    def verl_policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                         rollout_is_weights=None):
        statistics = MICRO_BATCH_STATISTICS.get() or {}
        if not statistics and statistics_needed(config) is not None:
            raise RuntimeError(
                f"loss_mode {PREFIX}{method} needs per-token statistics that rlvr-explore's model-output hook adds on "
                "verl's FSDP engine (strategy fsdp/fsdp2, model.use_fused_kernels=False); none reached the loss. "
                "Is rlvr-explore installed in every worker's environment, and is the actor an FSDP engine?")
        _, token_loss, _, metrics = losses.policy_token_loss(
            bound_loss(method, config), logp=log_prob, old_logp=old_log_prob, advantages=advantages,
            response_mask=response_mask.bool(), **statistics)
        if rollout_is_weights is not None:
            token_loss = token_loss * rollout_is_weights
        batch_info = dict(_get(config, "global_batch_info", {}) or {})
        loss = agg_loss(loss_mat=token_loss, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **batch_info)
        metrics = {f"actor/{key}": float(value) for key, value in metrics.items()}
        if "topn_logp" in statistics:
            for n, value in enumerate(rank_logprobs(statistics["topn_logp"], response_mask.bool()), start=1):
                metrics[f"actor/lambda{n}"] = value
        return loss, metrics

    verl_policy_loss.__name__ = f"rlvr_explore_{method}"
    return verl_policy_loss


def make_advantage_estimator(name: str):
    def verl_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: np.ndarray | None = None,
                       config=None, **kwargs):
        if index is None:
            raise ValueError(f"{PREFIX}{name} needs group ids: verl passes them as `index` from non_tensor_batch['uid']")
        _, group_ids = np.unique(np.asarray(index, dtype=object).astype(str), return_inverse=True)
        shaping, hp = advantage_settings()
        inputs = ADVANTAGE_INPUTS.get() or {}
        # the step is optional for some (PKPO without a k schedule), which say so themselves
        missing = sorted(adv_lib.inputs_read(name, shaping) - set(inputs) - {"step"})
        if missing:
            raise RuntimeError(
                f"{PREFIX}{name}{' with ' + '+'.join(shaping) if shaping else ''} reads {missing}, which rlvr-explore "
                "collects in verl's trainer (v1 or legacy): the entropy when it recomputes the old log-probs (not in bypass "
                f"mode), the answers from the reward function's extra output '{ANSWER_KEY}'; none reached it")
        advantages = adv_lib.compute_advantages(
            name, token_level_rewards.sum(-1), torch.as_tensor(group_ids, device=token_level_rewards.device),
            response_mask, shaping=shaping, **inputs, **hp).to(token_level_rewards.dtype)
        return advantages, advantages

    verl_advantage.__name__ = f"rlvr_explore_{name}_advantage"
    return verl_advantage


def register(core_algos=None) -> list[str]:
    """Register into verl's registries (or a module with the same two decorators); names added."""
    if core_algos is None:
        from verl.trainer.ppo import core_algos
    added = []
    for method in losses.available():
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
