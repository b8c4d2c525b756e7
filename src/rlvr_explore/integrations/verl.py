"""verl plugin: every rlvr-explore loss and advantage estimator inside verl (0.9.x).

Installed as the entry point ``rlvr_explore`` of the group ``verl.plugins``, which verl imports
in every process on ``import verl``. Importing this module:

1. registers, under a ``rlvr_`` prefix so verl's own names stay untouched, the policy losses
   ``rlvr_<method>`` for every method of :func:`rlvr_explore.losses.available` (verl's signature
   ``fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
   rollout_is_weights) -> (loss, metrics)``, aggregated by verl's ``agg_loss`` with
   ``config.global_batch_info``) and the advantage estimators ``rlvr_<name>``;
2. for the methods that need more than log-probs, patches verl's FSDP actor path as each module
   is imported (a post-import hook, so ``import verl`` stays as cheap as before):

   * the model-output hook: ``FSDPEngineWithLMHead.prepare_model_outputs`` routes the
     temperature-scaled logits through :func:`rlvr_explore.candidates.token_stats` (one chunked
     pass, closed-form backward) using the engine's own logits-processor seam, so verl's packing
     and sequence-parallel gathering place ``rlvr_entropy``, ``rlvr_top<n>_logp`` and
     ``rlvr_top<n>_id`` next to ``log_probs`` in ``model_output``;
   * the batch-wide gate: ``train_batch`` first runs a no-grad pass over the mini-batch, gathers
     the statistics of every data-parallel rank and stores this rank's part of the selection of
     :func:`rlvr_explore.losses.token_gate` (entropy quantile over the batch, KL-Cov/Clip-Cov
     covariance) as ``data["rlvr_token_gate"]``, which verl then splits into micro-batches with
     the rest of the data;
   * the replacement ``verl.workers.utils.losses.ppo_loss``: for those methods it lays the
     statistics out like ``log_probs`` and hands them to the registered policy loss for the
     duration of verl's own ``ppo_loss`` (entropy bonus, KL loss and metrics stay verl's); every
     other ``loss_mode`` goes to verl's function untouched.

3. for the advantage estimators and shaping steps that read more than the rewards (unlikeliness,
   GTPO, GRPO-S, PKPO's k schedule, the STILL shapings, outcome exploration), hooks verl's driver,
   in both of its trainers: the v1 ``PPOTrainer`` (``trainer.use_v1=true``, verl's default), whose
   ``_compute_advantage`` reads the old log-probs, the entropy, the prompts and the answers (the
   reward function's extra output ``answer``) from its TransferQueue, and the legacy
   ``RayPPOTrainer``, whose ``_compute_old_log_prob`` keeps the entropy verl drops; either way the
   registered estimator gets them, the step and the answer counts, which ``_save_checkpoint`` /
   ``_load_checkpoint`` keep beside verl's checkpoint;
4. for DPH-RL's rehearsal term (``dph_*`` keys of ``RLVR_EXPLORE_HP``, the set built before
   training by ``rlvr-explore dph-prepare``): the trainer's ``_update_actor`` sends each step's
   rehearsal rows in the batch's metadata, and the FSDP engine's ``train_batch`` runs the term's
   forward and backward on this rank's share before verl's optimizer step;
5. checks each of these seams (``SEAMS``: module, attribute, the parameters the hook was written
   for) as its module loads, leaves one that does not fit as verl wrote it and says so at WARNING,
   and stops a run at its trainer's start when what it asks for cannot be served.

Hyper-parameters verl's config already names are read from it (``clip_ratio_low/high``, ``clip_ratio_c``
(the dual clip, for the methods whose verl counterpart has one),
``policy_loss.kl_cov_ratio``, ``ppo_kl_coef``, ``clip_cov_*``); the others from
``policy_loss.rlvr``, a mapping that ``verl_config.ExplorePolicyLossConfig`` adds to verl's config,
or from the environment variable ``RLVR_EXPLORE_HP``, a YAML or JSON mapping such as
``{alpha: 0.01, top_n: 3}`` (set it in Ray's ``runtime_env.env_vars``). A key the method does
not take is an error in either place. The same variable carries the advantage estimator's
hyper-parameters and its ``shaping`` steps, e.g. ``{shaping: [outcome_ucb], outcome_coef: 1.0}``.
"""

from __future__ import annotations

import contextvars
import hashlib
import importlib.machinery
import importlib.metadata
import inspect
import json
import logging
import math
import os
import sys
import types
import warnings
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import yaml

from rlvr_explore import advantages as adv_lib
from rlvr_explore import losses
from rlvr_explore.candidates import token_stats
from rlvr_explore.losses.rehearsal import rehearsal_loss
from rlvr_explore.metrics.diagnostics import rank_logprobs
from rlvr_explore.train.config import DPHConfig

PREFIX = "rlvr_"
TESTED_VERL = "0.9.1"
ESTIMATORS = tuple(sorted(adv_lib.ESTIMATORS))
# RLVR_EXPLORE_HP keys that belong to the advantage estimator rather than the policy loss
ADVANTAGE_KEYS = frozenset(adv_lib.ADVANTAGE_CONFIG_KEYS) | {"shaping"}
# RLVR_EXPLORE_HP keys of DPH-RL's rehearsal: the set's path and the DPHConfig fields that apply to verl
DPH_FIELDS = ("divergence", "coef", "alpha", "chunk")
DPH_KEYS = frozenset({"dph_rehearsal"} | {f"dph_{name}" for name in DPH_FIELDS})
NOT_LOSS_KEYS = ADVANTAGE_KEYS | DPH_KEYS
ANSWER_KEY = "answer"  # the reward function's extra output holding the extracted final answer
ENTROPY_KEY = "rlvr_entropys"  # the old policy's entropy, kept past verl's pop of "entropys"
# methods whose loss reads entropy or the top-N candidates; the others need them only for a batch-wide gate
CANDIDATE_METHODS = tuple(name for name in losses.available() if losses.get_method(name).reads)
VERL_POLICY_LOSS_KEYS = {"kl_cov_ratio": "kl_cov_ratio", "ppo_kl_coef": "kl_cov_coef", "clip_cov_ratio": "clip_cov_ratio",
                         "clip_cov_lb": "clip_cov_lb", "clip_cov_ub": "clip_cov_ub"}
GATE_KEY = "rlvr_token_gate"
# verl's vanilla loss bounds A < 0 tokens by clip_ratio_c (dual clip); its gspo and clip_cov losses do not
VERL_WITHOUT_DUAL_CLIP = {"gspo", "gspo_n", "clip_cov"}
# verl adds its own entropy bonus and KL loss (actor.entropy_coeff, use_kl_loss) around the policy loss
VERL_OWNED_KEYS = {"entropy_coeff", "kl_coef"}


def environment_hyperparameters() -> dict:
    text = os.environ.get("RLVR_EXPLORE_HP", "").strip()
    if not text:
        return {}
    try:  # YAML's flow style, of which JSON is a part: '{alpha: 0.01}' passes through Hydra without escapes
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"RLVR_EXPLORE_HP is not a YAML or JSON mapping ({str(error).splitlines()[0]}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"RLVR_EXPLORE_HP must be a mapping such as '{{alpha: 0.01, top_n: 3}}', got {text!r}")
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
    accepted = spec.accepted_keys - VERL_OWNED_KEYS
    clip = _get(config, "clip_ratio", 0.2)
    hp = {"clip_eps_low": _get(config, "clip_ratio_low", clip), "clip_eps_high": _get(config, "clip_ratio_high", clip)}
    if "clip_eps_low" in spec.defaults and _get(config, "clip_ratio_low") is None and clip == 0.2:
        hp = {}  # the method's own clip (GSPO 3e-4 / 4e-4, Clip-Cov 1 / 1) unless the user set one
    if spec.name not in VERL_WITHOUT_DUAL_CLIP:
        hp["clip_ratio_c"] = _get(config, "clip_ratio_c", 3.0)
    policy_config = _get(config, "policy_loss")
    for verl_key, key in VERL_POLICY_LOSS_KEYS.items():
        value = _get(policy_config, verl_key)
        if value is not None and key in accepted:
            hp[key] = value
    environment = {k: v for k, v in environment_hyperparameters().items() if k not in NOT_LOSS_KEYS}
    for source, extra in (("actor.policy_loss.rlvr", dict(_get(policy_config, "rlvr", {}))),
                          ("RLVR_EXPLORE_HP", environment)):
        unknown = sorted(set(extra) - accepted)
        if unknown:
            owned = sorted(set(unknown) & VERL_OWNED_KEYS)
            hint = f" ({', '.join(owned)}: set through verl's actor.entropy_coeff / use_kl_loss)" if owned else ""
            raise ValueError(f"{source}: {unknown} do not apply to loss '{method}'{hint}; it takes {sorted(accepted)}")
        hp.update(extra)
    return hp


def selected_method(config) -> str | None:
    """Our method named by ``actor.policy_loss.loss_mode`` (``rlvr_<method>``), or None."""
    mode = _get(_get(config, "policy_loss"), "loss_mode", "")
    method = mode[len(PREFIX):] if isinstance(mode, str) and mode.startswith(PREFIX) else None
    return method if method in losses.available() else None


class StatisticsRequest(NamedTuple):
    method: str
    hp: dict
    candidates: bool  # entropy and top-N per token, from the model-output hook
    batch_gate: bool  # a selection over the whole mini-batch, from the pass before training


def statistics_needed(config) -> StatisticsRequest | None:
    """What the selected method needs beyond log-probs, or None when log-probs suffice."""
    method = selected_method(config)
    if method is None:
        return None
    hp = loss_hyperparameters(method, config)
    request = StatisticsRequest(method, hp, method in CANDIDATE_METHODS, losses.needs_batch_gate(method, **hp))
    return request if request.candidates or request.batch_gate else None


# ---------------------------------------------------------------- registered policy losses and estimators

# the current micro-batch's statistics in the padded (B, T) layout, set by ppo_loss around verl's own
_MICRO_BATCH_STATISTICS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("rlvr_statistics", default=None)


def make_policy_loss(method: str, agg_loss):
    def verl_policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                         rollout_is_weights=None):
        statistics = _MICRO_BATCH_STATISTICS.get() or {}
        if not statistics and statistics_needed(config) is not None:
            raise RuntimeError(
                f"loss_mode {PREFIX}{method} needs per-token statistics that rlvr-explore's model-output hook adds on "
                "verl's FSDP engine (strategy fsdp/fsdp2, model.use_fused_kernels=False); none reached the loss. "
                "Is rlvr-explore installed in every worker's environment, and is the actor an FSDP engine?")
        _, token_loss, _, metrics = losses.policy_token_loss(
            method, logp=log_prob, old_logp=old_log_prob, advantages=advantages, response_mask=response_mask.bool(),
            **statistics, **loss_hyperparameters(method, config))
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


def advantage_settings() -> tuple[tuple[str, ...], dict]:
    """The shaping steps and estimator hyper-parameters of RLVR_EXPLORE_HP; keys that are neither
    the estimator's nor any loss's are an error."""
    settings = environment_hyperparameters()
    loss_keys = set().union(*(losses.get_method(m).accepted_keys for m in losses.available()))
    unknown = sorted(set(settings) - NOT_LOSS_KEYS - loss_keys)
    if unknown:
        raise ValueError(f"RLVR_EXPLORE_HP: {unknown} are neither advantage, DPH-RL nor loss hyper-parameters; "
                         f"advantage keys: {sorted(ADVANTAGE_KEYS)}; DPH-RL keys: {sorted(DPH_KEYS)}")
    shaping = settings.get("shaping", [])
    if isinstance(shaping, str) or not all(isinstance(step, str) for step in shaping):
        raise ValueError(f"RLVR_EXPLORE_HP: shaping must be a list of step names, got {shaping!r}")
    return tuple(shaping), {k: v for k, v in settings.items() if k in adv_lib.ADVANTAGE_CONFIG_KEYS}


# what the estimator reads beyond rewards, set by the compute_advantage hook around verl's own
_ADVANTAGE_INPUTS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("rlvr_advantage_inputs", default=None)
# the driver's state across steps: the trainer's step, the outcome-exploration answer counts, and
# DPH-RL's rehearsal set, read once from its path
DRIVER = types.SimpleNamespace(step=None, answer_counts={}, rehearsal=None, rehearsal_path=None)


def make_advantage_estimator(name: str):
    def verl_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: np.ndarray | None = None,
                       config=None, **kwargs):
        if index is None:
            raise ValueError(f"{PREFIX}{name} needs group ids: verl passes them as `index` from non_tensor_batch['uid']")
        _, group_ids = np.unique(np.asarray(index, dtype=object).astype(str), return_inverse=True)
        shaping, hp = advantage_settings()
        inputs = _ADVANTAGE_INPUTS.get() or {}
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


# ---------------------------------------------------------------- the model-output hook


def candidate_columns(student_logits: torch.Tensor, data=None, top_n: int = 1) -> dict[str, torch.Tensor]:
    """Per-token statistics of packed logits ``(1, nnz, V)`` as ``(1, nnz)`` columns, the shape
    verl's logits-processor seam packs into nested tensors. The engine computes the sampled
    token's log-prob itself, so the ids passed to ``token_stats`` are placeholders."""
    placeholder_ids = torch.zeros(student_logits.shape[:2], dtype=torch.long, device=student_logits.device)
    stats = token_stats(student_logits, placeholder_ids, top_n=top_n)
    columns = {"rlvr_entropy": stats.entropy}
    for n in range(top_n):
        columns[f"rlvr_top{n + 1}_logp"] = stats.topn_logp[..., n]
        columns[f"rlvr_top{n + 1}_id"] = stats.topn_ids[..., n]
    return columns


def _loss_config(loss_function):
    """verl's actor loss is ``functools.partial(ppo_loss, config=actor_config)``."""
    return (getattr(loss_function, "keywords", None) or {}).get("config")


def _top_n(method: str, hp: dict) -> int:
    return hp.get("top_n", losses.LossConfig.top_n) if "top_n" in losses.get_method(method).keys else 1


def make_prepare_model_outputs(original, tensordict_utils):
    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        needed = statistics_needed(_loss_config(logits_processor_func))
        if needed is None or not needed.candidates:  # KL-Cov and Clip-Cov need log-probs only
            return original(self, output, output_args, micro_batch, logits_processor_func)
        method, hp, _, _ = needed
        get = partial(tensordict_utils.get_non_tensor_data, data=micro_batch)
        if get(key="use_fused_kernels", default=False):
            raise ValueError(f"loss_mode {PREFIX}{method} needs the logits: set actor_rollout_ref.model.use_fused_kernels=False")
        if get(key="distillation_use_topk", default=False):
            raise ValueError(f"loss_mode {PREFIX}{method} cannot be combined with top-k distillation (both use the logits processor)")
        tensordict_utils.assign_non_tensor(micro_batch, distillation_use_topk=True)
        try:
            return original(self, output, output_args, micro_batch, partial(candidate_columns, top_n=_top_n(method, hp)))
        finally:
            tensordict_utils.assign_non_tensor(micro_batch, distillation_use_topk=False)

    prepare_model_outputs.rlvr_explore_original = original
    return prepare_model_outputs


def _padded(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return torch.nested.to_padded_tensor(tensor, 0, output_size=tuple(shape)) if tensor.is_nested else tensor


def padded_statistics(model_output: dict, data, no_padding_2_padding, with_candidates: bool) -> dict:
    """``model_output``'s statistics and the data's response ids and gate, laid out like verl's
    padded ``log_prob`` (B, T); what the registered policy loss and ``token_gate`` take."""
    statistics = {}
    if with_candidates:
        if "rlvr_entropy" not in model_output:
            raise RuntimeError(f"the model output has no candidate statistics (keys: {sorted(model_output)}); "
                               "rlvr-explore's hook supports verl's FSDP engine only")
        top_n = sum(key.endswith("_logp") and key.startswith("rlvr_top") for key in model_output)
        column = lambda key: no_padding_2_padding(model_output[key], data)  # noqa: E731
        statistics["entropy"] = column("rlvr_entropy")
        statistics["topn_logp"] = torch.stack([column(f"rlvr_top{n}_logp") for n in range(1, top_n + 1)], -1)
        statistics["topn_ids"] = torch.stack([column(f"rlvr_top{n}_id") for n in range(1, top_n + 1)], -1)
        statistics["response_ids"] = _padded(data["responses"], statistics["entropy"].shape)
    if GATE_KEY in data.keys():
        statistics["token_gate"] = data[GATE_KEY].bool()  # a padded (B, T) tensor, split with the micro-batch
    return statistics


def make_ppo_loss(verl_ppo_loss, no_padding_2_padding):
    def ppo_loss(config, model_output, data, dp_group=None):
        needed = statistics_needed(config)
        if needed is None:
            return verl_ppo_loss(config, model_output, data, dp_group)
        token = _MICRO_BATCH_STATISTICS.set(padded_statistics(model_output, data, no_padding_2_padding, needed.candidates))
        try:
            return verl_ppo_loss(config, model_output, data, dp_group)
        finally:
            _MICRO_BATCH_STATISTICS.reset(token)

    ppo_loss.rlvr_explore_original = verl_ppo_loss
    return ppo_loss


def _statistics_only(config, model_output, data, dp_group=None):
    """A loss for the no-grad pass that gathers statistics; its value is unused."""
    return torch.zeros(()), {}


def gather_rows(tensors: dict[str, torch.Tensor], group=None) -> tuple[dict[str, torch.Tensor], slice]:
    """Every data-parallel rank's rows of each (B, T, ...) tensor, concatenated in rank order (ranks
    may hold different B and T; shorter ones are zero-padded, which the response mask marks as
    padding), and the slice of the result that is this rank's, so a batch-wide gate covers the
    whole mini-batch and not one rank's share."""
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size(group) == 1:
        return tensors, slice(None)
    device = tensors["response_mask"].device
    local = torch.tensor(tensors["response_mask"].shape[:2], device=device)
    shapes = [torch.zeros_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(shapes, local, group=group)
    rows, width = max(int(s[0]) for s in shapes), max(int(s[1]) for s in shapes)
    everyone = {}
    for key, tensor in tensors.items():
        padded = tensor.new_zeros(rows, width, *tensor.shape[2:])
        padded[: tensor.shape[0], : tensor.shape[1]] = tensor
        parts = [torch.empty_like(padded) for _ in shapes]
        dist.all_gather(parts, padded.contiguous(), group=group)
        everyone[key] = torch.cat([part[: int(s[0])] for part, s in zip(parts, shapes)])
    start = sum(int(s[0]) for s in shapes[: dist.get_rank(group)])
    return everyone, slice(start, start + tensors["response_mask"].shape[0])


def batch_gate(engine, data, config, needed: StatisticsRequest, no_padding_2_padding) -> torch.Tensor:
    """This rank's part of the selection ``token_gate`` makes over the whole mini-batch, from a
    no-grad pass and the statistics of every data-parallel rank."""
    method, hp, candidates, _ = needed
    model_output = engine.infer_batch(data, loss_function=partial(_statistics_only, config=config))["model_output"]
    padded = data.select("response_mask", "old_log_probs", "advantages").to_padded_tensor()
    tensors = {"logp": no_padding_2_padding(model_output["log_probs"], data), "old_logp": padded["old_log_probs"],
               "advantages": padded["advantages"], "response_mask": padded["response_mask"].bool(),
               **padded_statistics(model_output, data, no_padding_2_padding, candidates)}
    everyone, mine = gather_rows(tensors, engine.get_data_parallel_group())
    gate = losses.token_gate(method, **everyone, **hp)[mine]
    return gate[:, : tensors["response_mask"].shape[1]].to(tensors["response_mask"].device)


def make_train_batch(original, no_padding_2_padding, tensordict_utils):
    def train_batch(self, data, loss_function):
        config = _loss_config(loss_function)
        needed = statistics_needed(config)
        if needed is not None and needed.batch_gate:
            data[GATE_KEY] = batch_gate(self, data, config, needed, no_padding_2_padding)
        chunk = tensordict_utils.get_non_tensor_data(data=data, key=REHEARSAL_KEY, default=None)
        if chunk is None:
            return original(self, data, loss_function)
        rehearsal = rehearsal_batch(chunk.next_share(), data, self.get_data_parallel_rank(),
                                    self.get_data_parallel_size(), tensordict_utils)
        loss = partial(verl_rehearsal_loss, dph=chunk.dph, no_padding_2_padding=no_padding_2_padding)
        verl_forward_backward = self.forward_backward_batch

        # verl's train_batch is zero_grad, forward_backward_batch, optimizer_step: the rehearsal
        # backward joins the policy's between the last two, so verl's step, clipping and grad-norm apply to both
        def forward_backward_and_rehearse(batch, loss_function, forward_only=False):
            outputs = verl_forward_backward(batch, loss_function, forward_only)
            rehearsed = verl_forward_backward(rehearsal, loss, forward_only)
            if outputs is not None and rehearsed is not None:  # outputs exist on the ranks that report metrics
                outputs["metrics"].update(rehearsed["metrics"])
            return outputs

        self.forward_backward_batch = forward_backward_and_rehearse
        try:
            return original(self, data, loss_function)
        finally:
            del self.forward_backward_batch

    train_batch.rlvr_explore_original = original
    return train_batch


# ---------------------------------------------------------------- the driver: advantage inputs and answer counts


def selected_estimator(adv_estimator) -> str | None:
    """Our estimator named by ``algorithm.adv_estimator`` (``rlvr_<name>``), or None."""
    name = str(getattr(adv_estimator, "value", adv_estimator))
    name = name[len(PREFIX):] if name.startswith(PREFIX) else None
    return name if name in adv_lib.ESTIMATORS else None


def prompt_key(tokens: torch.Tensor) -> str:
    """A stable id of a question: a hash of its prompt's tokens (verl's uids are new each step)."""
    return hashlib.sha1(tokens.cpu().numpy().astype(np.int64).tobytes()).hexdigest()[:16]


def prompt_keys(prompts: torch.Tensor, attention_mask: torch.Tensor) -> list[str]:
    """``prompt_key`` of each row of left-padded prompts, the padding left out."""
    prompt_mask = attention_mask[:, : prompts.shape[1]].bool()
    return [prompt_key(row[keep]) for row, keep in zip(prompts, prompt_mask)]


def parsed_answers(answers) -> list:
    """The reward function's answers, None where it parsed none (NaN once numpy has held them)."""
    return [None if answer is None or answer != answer else answer for answer in answers]


def advantage_inputs(data, entropy: torch.Tensor | None) -> dict:
    """The old log-probs, entropy, step and answers verl's batch holds, as ``compute_advantages`` takes them."""
    inputs = {"old_logp": data.batch["old_log_probs"] if "old_log_probs" in data.batch.keys() else None,
              "entropy": entropy, "step": DRIVER.step}
    if ANSWER_KEY in data.non_tensor_batch:
        inputs["answers"] = parsed_answers(np.asarray(data.non_tensor_batch[ANSWER_KEY], dtype=object).tolist())
        inputs["prompt_ids"] = prompt_keys(data.batch["prompts"], data.batch["attention_mask"])
        inputs["answer_counts"] = DRIVER.answer_counts
    return {key: value for key, value in inputs.items() if value is not None}


def make_compute_advantage(original):
    def compute_advantage(data, adv_estimator, *args, **kwargs):
        entropy = data.batch.pop(ENTROPY_KEY) if ENTROPY_KEY in data.batch.keys() else None  # not sent on to the actor
        if selected_estimator(adv_estimator) is None or _ADVANTAGE_INPUTS.get() is not None:  # v1: set by its hook
            return original(data, adv_estimator, *args, **kwargs)
        token = _ADVANTAGE_INPUTS.set(advantage_inputs(data, entropy))
        try:
            return original(data, adv_estimator, *args, **kwargs)
        finally:
            _ADVANTAGE_INPUTS.reset(token)

    compute_advantage.rlvr_explore_original = original
    return compute_advantage


def make_compute_old_log_prob(original):
    def _compute_old_log_prob(self, batch):
        old_log_prob, mfu = original(self, batch)
        DRIVER.step = self.global_steps - 1  # verl counts from 1; our step is the number of updates made (0 first)
        estimator = selected_estimator(self.config.algorithm.adv_estimator)
        if estimator is not None and "entropy" in adv_lib.inputs_read(estimator, advantage_settings()[0]):
            old_log_prob.batch[ENTROPY_KEY] = old_log_prob.batch["entropys"].clone()
        return old_log_prob, mfu

    _compute_old_log_prob.rlvr_explore_original = original
    return _compute_old_log_prob


V1_ADVANTAGE_FIELDS = ("response_mask", "old_log_probs", "entropy", "prompts", ANSWER_KEY, "extra_fields")


def v1_advantage_inputs(data) -> dict:
    """What ``compute_advantages`` reads, from the TransferQueue fields of a v1 batch (one row per
    key, in the order verl's own ``_compute_advantage`` reads them). The answers are the reward
    function's extra output: a field of their own when the reward is computed beside the trainer,
    ``extra_fields["reward_extra_info"]`` when verl's reward loop computes it during the rollout."""
    padded = data.select(*(key for key in ("response_mask", "old_log_probs", "entropy") if key in data.keys()))
    padded = padded.to_padded_tensor()
    inputs = {"step": DRIVER.step, "old_logp": padded.get("old_log_probs"), "entropy": padded.get("entropy")}
    if ANSWER_KEY in data.keys():
        answers = list(data[ANSWER_KEY])
    elif "extra_fields" in data.keys():
        answers = [(extra or {}).get("reward_extra_info", {}).get(ANSWER_KEY) for extra in data["extra_fields"]]
        answers = None if all(answer is None for answer in answers) else answers
    else:
        answers = None
    if answers is not None and "prompts" in data.keys():
        inputs["answers"] = parsed_answers(answers)
        inputs["prompt_ids"] = [prompt_key(row) for row in data["prompts"].unbind()]
        inputs["answer_counts"] = DRIVER.answer_counts
    return {key: value for key, value in inputs.items() if value is not None}


def make_v1_compute_advantage(original, trainer_module):
    """verl's v1 trainer keeps the entropy and the answers in its TransferQueue and reads only the
    rewards, masks and log-probs for the estimator: hand ours the rest, read by the batch's keys."""
    def _compute_advantage(self, batch, metrics):
        DRIVER.step = self.global_steps - 1  # verl counts from 1; our step is the number of updates made (0 first)
        if selected_estimator(self.config.algorithm.adv_estimator) is None:
            return original(self, batch, metrics)
        data = trainer_module.tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                           select_fields=list(V1_ADVANTAGE_FIELDS))
        token = _ADVANTAGE_INPUTS.set(v1_advantage_inputs(data))
        try:
            return original(self, batch, metrics)
        finally:
            _ADVANTAGE_INPUTS.reset(token)

    _compute_advantage.rlvr_explore_original = original
    return _compute_advantage


def make_save_checkpoint(original):
    def _save_checkpoint(self):
        # before verl's files, so that latest_checkpointed_iteration.txt never names a folder without them
        if DRIVER.answer_counts:
            folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
            adv_lib.save_answer_counts(folder, DRIVER.answer_counts)
        return original(self)

    _save_checkpoint.rlvr_explore_original = original
    return _save_checkpoint


def make_load_checkpoint(original):
    def _load_checkpoint(self):
        result = original(self)
        if self.global_steps > 0:  # verl resumed from global_step_<n>
            trainer = self.config.trainer
            folder = (trainer.resume_from_path if trainer.resume_mode == "resume_path"
                      else os.path.join(os.path.abspath(trainer.default_local_dir), f"global_step_{self.global_steps}"))
            DRIVER.answer_counts = adv_lib.load_answer_counts(folder)
        return result

    _load_checkpoint.rlvr_explore_original = original
    return _load_checkpoint


# ---------------------------------------------------------------- DPH-RL's rehearsal term

REHEARSAL_KEY = "rlvr_rehearsal"  # the step's rehearsal rows, from the driver to the actor in the batch's metadata
REF_KEY = "rlvr_ref_log_prob"  # pi_0's stored log-probs of the rehearsal tokens
REHEARSAL_METRIC = "actor/dph_rehearsal_loss"
# a rehearsal set: left-padded prompts, right-padded responses, pi_0's log-probs at the rollout temperature
REHEARSAL_FIELDS = ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "ref_logp")


def rehearsal_tensors(rollout) -> dict[str, torch.Tensor]:
    """A rehearsal set from the built-in trainer's Rollout of pi_0's correct responses (None: empty)."""
    if rollout is None:
        return {"prompt_ids": torch.zeros(0, 1, dtype=torch.long), "prompt_mask": torch.zeros(0, 1, dtype=torch.bool),
                "response_ids": torch.zeros(0, 1, dtype=torch.long), "response_mask": torch.zeros(0, 1, dtype=torch.bool),
                "ref_logp": torch.zeros(0, 1)}
    return {"prompt_ids": rollout.prompt_ids, "prompt_mask": rollout.prompt_mask, "response_ids": rollout.response_ids,
            "response_mask": rollout.response_mask, "ref_logp": rollout.old_logp}


def dph_settings() -> tuple[str, DPHConfig] | None:
    """The rehearsal set's path and DPH-RL's settings from RLVR_EXPLORE_HP's ``dph_*`` keys, or None."""
    given = {key[len("dph_"):]: value for key, value in environment_hyperparameters().items() if key.startswith("dph_")}
    if not given:
        return None
    unknown = sorted(f"dph_{key}" for key in given if f"dph_{key}" not in DPH_KEYS)
    if unknown:
        raise ValueError(f"RLVR_EXPLORE_HP: {unknown} do not apply through verl, which takes {sorted(DPH_KEYS)} "
                         "(the rehearsal set is built before training: docs/integrations.md)")
    path = given.pop("rehearsal", None)
    if not isinstance(path, str):
        raise ValueError(f"RLVR_EXPLORE_HP: {sorted('dph_' + k for k in given)} need dph_rehearsal, the path of the "
                         f"rehearsal set (a torch file with {', '.join(REHEARSAL_FIELDS)}), got {path!r}")
    dph = DPHConfig(enabled=True, **given)
    dph.validate(prefix="RLVR_EXPLORE_HP dph_")
    return path, dph


def _left_aligned(mask: torch.Tensor) -> bool:
    """Every row's True entries form a prefix."""
    return bool((mask.long().cummin(1).values.bool() == mask).all())


def load_rehearsal_set(path: str) -> dict[str, torch.Tensor]:
    """A rehearsal set saved as a mapping of REHEARSAL_FIELDS, or the built-in trainer's
    ``rehearsal.pt`` (its ``old_logp`` is pi_0's); ValueError naming the file and key otherwise."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"RLVR_EXPLORE_HP dph_rehearsal: {path} does not exist")
    data = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(data, dict) and "rehearsal" in data and not isinstance(data.get("rehearsal"), torch.Tensor):
        data = rehearsal_tensors(data["rehearsal"])  # the built-in trainer's file
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a rehearsal set is a mapping of {', '.join(REHEARSAL_FIELDS)}, got {type(data).__name__}")
    missing = [key for key in REHEARSAL_FIELDS if not isinstance(data.get(key), torch.Tensor)]
    if missing:
        raise ValueError(f"{path}: no tensor {missing} (a rehearsal set holds {', '.join(REHEARSAL_FIELDS)})")
    rows = data["prompt_ids"].shape[0]
    for key, like in (("prompt_mask", "prompt_ids"), ("response_mask", "response_ids"), ("ref_logp", "response_ids")):
        if data[key].shape != data[like].shape or data[like].ndim != 2 or data[like].shape[0] != rows:
            raise ValueError(f"{path}: {key} has shape {tuple(data[key].shape)}, {like} {tuple(data[like].shape)}; "
                             f"expected (rows, length) and equal, with {rows} rows as prompt_ids")
    prompt_mask, response_mask = data["prompt_mask"].bool(), data["response_mask"].bool()
    if not _left_aligned(prompt_mask.flip(1)) or not prompt_mask.any(1).all():
        raise ValueError(f"{path}: prompt_mask must mark a non-empty, left-padded prompt in every row")
    if not _left_aligned(response_mask) or not response_mask.any(1).all():
        raise ValueError(f"{path}: response_mask must mark a non-empty, right-padded response in every row")
    ref = data["ref_logp"].float()
    if not torch.isfinite(ref[response_mask]).all() or (ref[response_mask] > 1e-4).any():
        raise ValueError(f"{path}: ref_logp must be finite log-probabilities (<= 0) at every response token")
    return {"prompt_ids": data["prompt_ids"].long() * prompt_mask, "prompt_mask": prompt_mask,
            "response_ids": data["response_ids"].long() * response_mask, "response_mask": response_mask,
            "ref_logp": ref * response_mask}


# the actor process's place in the step's mini-batches
ACTOR = types.SimpleNamespace(step=None, updates=0)


@dataclass
class RehearsalChunk:
    """One training step's rehearsal rows, split into a share per mini-batch of an epoch (every
    epoch rehearses the same shares, as the built-in trainer does)."""
    step: int
    dph: DPHConfig
    shares: list[dict[str, torch.Tensor]]

    def next_share(self) -> dict[str, torch.Tensor]:
        """The share of the actor's next mini-batch: every data-parallel rank trains the step's
        mini-batches in the same order, so a count of the calls within the step indexes them."""
        if ACTOR.step != self.step:
            ACTOR.step, ACTOR.updates = self.step, 0
        share = self.shares[ACTOR.updates % len(self.shares)]
        ACTOR.updates += 1
        return share



def draw_rehearsal_chunk(rehearsal: dict[str, torch.Tensor], dph: DPHConfig, mini_batches: int, seed: int,
                         step: int) -> RehearsalChunk:
    """``dph.chunk`` rows in ``mini_batches`` equal shares, drawn without replacement from the set,
    repeated when it is smaller (as the official code concatenates it x3), from a generator seeded
    by the step so that a resumed run draws as an uninterrupted one."""
    if dph.chunk % mini_batches:
        raise ValueError(f"RLVR_EXPLORE_HP dph_chunk={dph.chunk} does not split into the step's {mini_batches} "
                         f"mini-batches: use a multiple of {mini_batches} times the data-parallel ranks")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    size = len(rehearsal["ref_logp"])
    rows = torch.cat([torch.randperm(size, generator=generator) for _ in range(-(-dph.chunk // size))])[: dph.chunk]
    shares = [{key: value[part] for key, value in rehearsal.items()} for part in rows.view(mini_batches, -1)]
    return RehearsalChunk(step, dph, shares)


def rehearsal_batch(share: dict[str, torch.Tensor], mini_batch, rank: int, dp_size: int, tensordict_utils):
    """This data-parallel rank's part of a share in verl's no-padding layout, with the mini-batch's
    settings (temperature, micro-batching, padding removal)."""
    from tensordict import NonTensorData, TensorDict
    from verl.workers.utils.padding import left_right_2_no_padding

    size = len(share["ref_logp"])
    if size % dp_size:  # every rank must run as many micro-batches, or FSDP's collectives would wait forever
        raise ValueError(f"DPH-RL: {size} rehearsal responses for this mini-batch do not split evenly over {dp_size} "
                         f"data-parallel ranks; set RLVR_EXPLORE_HP dph_chunk to a multiple of {dp_size} times the "
                         "number of mini-batches per step")
    rows = torch.arange(size).view(dp_size, -1)[rank]
    prompt_mask, response_mask = share["prompt_mask"][rows].long(), share["response_mask"][rows].long()
    attention = torch.cat([prompt_mask, response_mask], 1)
    prompts, responses = share["prompt_ids"][rows], share["response_ids"][rows]
    data = TensorDict({"prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], 1),
                       "attention_mask": attention, "position_ids": (attention.cumsum(1) - 1).clamp(min=0),
                       "response_mask": response_mask.float(), REF_KEY: share["ref_logp"][rows]}, batch_size=[len(rows)])
    # the mini-batch's scalar settings; not its per-row fields (uids, answers) or lists (token counts)
    settings = {key: value.data for key, value in mini_batch.items()
                if isinstance(value, NonTensorData) and not isinstance(value.data, list) and key != REHEARSAL_KEY}
    if isinstance(mini_batch.get("temperature"), torch.Tensor):  # per-response temperatures: pi_0's log-probs have one
        temperatures = mini_batch["temperature"].unique()
        if len(temperatures) != 1:
            raise ValueError(f"DPH-RL: the rollouts have temperatures {temperatures.tolist()}; the rehearsal set's "
                             "log-probs were computed at one, so the rehearsal term needs a single rollout temperature")
        settings["temperature"] = float(temperatures[0])
    # no entropy, teacher or distillation for these rows: the term reads their log-probs only
    settings.update(calculate_entropy=False, distillation_use_topk=False, distillation_only=False)
    if settings.get("micro_batch_size_per_gpu"):  # verl's fixed micro-batches must divide the rows
        settings["micro_batch_size_per_gpu"] = math.gcd(len(rows), settings["micro_batch_size_per_gpu"])
    tensordict_utils.assign_non_tensor(data, **settings)
    return left_right_2_no_padding(data).to(mini_batch["response_mask"].device)


def verl_rehearsal_loss(model_output, data, dp_group=None, dph: DPHConfig = None, no_padding_2_padding=None):
    """DPH-RL's term on a micro-batch of rehearsal rows, normalised as verl's token-mean losses: by
    the rehearsal tokens of every rank (``batch_num_tokens``) times ``dp_size``, since FSDP
    averages the ranks' gradients; the sum over ranks and micro-batches is ``rehearsal_loss``."""
    from verl.utils.metric import AggregationType, Metric

    logp = no_padding_2_padding(model_output["log_probs"], data)
    padded = data.select("response_mask", REF_KEY).to_padded_tensor()
    loss = rehearsal_loss(logp, padded[REF_KEY], padded["response_mask"], dph.coef, dph.divergence, dph.alpha,
                          tokens=data["batch_num_tokens"]) * data["dp_size"]
    return loss, {REHEARSAL_METRIC: Metric(value=loss.detach(), aggregation=AggregationType.SUM)}


def rehearsal_chunk(trainer, responses: int) -> RehearsalChunk | None:
    """This step's rehearsal rows for the actor, or None without DPH-RL (or with an empty set)."""
    settings = dph_settings()
    if settings is None:
        return None
    path, dph = settings
    if DRIVER.rehearsal_path != path:
        DRIVER.rehearsal, DRIVER.rehearsal_path = load_rehearsal_set(path), path
        if not len(DRIVER.rehearsal["ref_logp"]):
            warnings.warn(f"DPH-RL: {path} holds no rehearsal response; training with RL alone", stacklevel=3)
    if not len(DRIVER.rehearsal["ref_logp"]):
        return None
    actor = trainer.config.actor_rollout_ref
    mini_batches = max(1, responses // (actor.actor.ppo_mini_batch_size * actor.rollout.n))
    return draw_rehearsal_chunk(DRIVER.rehearsal, dph, mini_batches, actor.actor.data_loader_seed, trainer.global_steps)


def check_rehearsed(metrics: dict) -> None:
    if REHEARSAL_METRIC not in metrics:
        raise RuntimeError("DPH-RL: the actor update ran without the rehearsal term; it runs on verl's FSDP engine "
                           "workers (actor strategy fsdp or fsdp2) with rlvr-explore installed in every worker's "
                           "environment")


def make_update_actor(original):
    """The legacy trainer: the chunk travels in the batch's ``meta_info``."""
    def _update_actor(self, batch):
        chunk = rehearsal_chunk(self, len(batch))
        if chunk is None:
            return original(self, batch)
        batch.meta_info[REHEARSAL_KEY] = chunk
        try:
            output = original(self, batch)
        finally:
            batch.meta_info.pop(REHEARSAL_KEY, None)
        check_rehearsed(output.meta_info["metrics"])
        return output

    _update_actor.rlvr_explore_original = original
    return _update_actor


def make_v1_update_actor(original):
    """The v1 trainer: the chunk travels in the batch's ``extra_info``, which the workers receive as
    the same non-tensor entry of their TensorDict."""
    def _update_actor(self, batch, metrics):
        chunk = rehearsal_chunk(self, len(batch))
        if chunk is None:
            return original(self, batch, metrics)
        batch.extra_info[REHEARSAL_KEY] = chunk
        try:
            output = original(self, batch, metrics)
        finally:
            batch.extra_info.pop(REHEARSAL_KEY, None)
        check_rehearsed(metrics)
        return output

    _update_actor.rlvr_explore_original = original
    return _update_actor


# ---------------------------------------------------------------- seams: where the plugin meets verl


def _rebind_ppo_loss(original, module):
    replacement = make_ppo_loss(original, module.no_padding_2_padding)
    workers = sys.modules.get("verl.workers.engine_workers")  # imported before this plugin: rebind its name too
    if workers is not None:
        workers.ppo_loss = replacement
    return replacement


def make_startup_check(original, trainer: str):
    """The trainer's start (v1 ``init``, legacy ``init_workers``), after ``check_run`` (below)."""
    def start(self):
        check_run(self.config, trainer)
        return original(self)

    start.rlvr_explore_original = original
    return start


def _original_only(make, *args):
    """A seam's ``wrap`` for a hook made from verl's original alone (and fixed ``args``)."""
    return lambda original, module: make(original, *args)


def _wrap_prepare_model_outputs(original, module):
    from verl.utils import tensordict_utils

    return make_prepare_model_outputs(original, tensordict_utils)


def _wrap_train_batch(original, module):
    from verl.utils import tensordict_utils
    from verl.workers.utils.padding import no_padding_2_padding

    return make_train_batch(original, no_padding_2_padding, tensordict_utils)


@dataclass(frozen=True)
class Seam:
    """An attribute of verl the plugin reads or wraps, with the parameters it was written against.
    ``serves`` names what needs it; ``trainer`` is the driver class it belongs to (None: the
    workers' code, shared by both trainers); ``wrap`` is None for an attribute only called."""
    module: str
    attribute: str
    parameters: tuple[str, ...]
    serves: str
    trainer: str | None = None
    wrap: object = None

    @property
    def name(self) -> str:
        return f"{self.module}.{self.attribute}"


LEGACY, V1 = "legacy (trainer.use_v1=false)", "v1 (trainer.use_v1=true, verl's default)"
CORE, WORKERS = "verl.trainer.ppo.core_algos", "verl.workers.engine.fsdp.transformer_impl"
RAY_TRAINER, V1_TRAINER = "verl.trainer.ppo.ray_trainer", "verl.trainer.ppo.v1.trainer_base"
# what each kind of need is called in messages
NEEDS = {"losses": "the rlvr_* loss modes and estimators", "statistics": "losses that read entropy, top-N or a batch gate",
         "candidates": "losses that read entropy or top-N", "train_batch": "batch gates and DPH-RL's rehearsal",
         "advantage_inputs": "estimators that read old log-probs, entropy, the step or answers",
         "answer_counts": "outcome exploration's answer counts across checkpoints",
         "rehearsal": "DPH-RL's rehearsal term", "startup": "the start-up check"}
SEAMS = (
    Seam(CORE, "register_policy_loss", ("name",), "losses"),
    Seam(CORE, "register_adv_est", ("name_or_enum",), "losses"),
    Seam(CORE, "agg_loss", ("loss_mat", "loss_mask", "loss_agg_mode", "dp_size", "batch_num_tokens",
                            "global_batch_size", "loss_scale_factor"), "losses"),
    Seam("verl.workers.utils.padding", "no_padding_2_padding", ("tensor", "data"), "statistics"),
    Seam("verl.workers.utils.losses", "ppo_loss", ("config", "model_output", "data", "dp_group"), "statistics",
         wrap=_rebind_ppo_loss),
    Seam(WORKERS, "FSDPEngineWithLMHead.prepare_model_outputs",
         ("self", "output", "output_args", "micro_batch", "logits_processor_func"), "candidates",
         wrap=_wrap_prepare_model_outputs),
    Seam(WORKERS, "FSDPEngineWithLMHead.forward_backward_batch", ("self", "data", "loss_function", "forward_only"),
         "train_batch"),
    Seam(WORKERS, "FSDPEngineWithLMHead.train_batch", ("self", "data", "loss_function"), "train_batch",
         wrap=_wrap_train_batch),
    Seam(RAY_TRAINER, "compute_advantage", ("data", "adv_estimator", "gamma", "lam", "num_repeat",
                                            "norm_adv_by_std_in_grpo", "config"), "advantage_inputs",
         wrap=_original_only(make_compute_advantage)),  # both trainers call it
    Seam(RAY_TRAINER, "RayPPOTrainer._compute_old_log_prob", ("self", "batch"), "advantage_inputs", LEGACY,
         _original_only(make_compute_old_log_prob)),
    Seam(RAY_TRAINER, "RayPPOTrainer._save_checkpoint", ("self",), "answer_counts", LEGACY,
         _original_only(make_save_checkpoint)),
    Seam(RAY_TRAINER, "RayPPOTrainer._load_checkpoint", ("self",), "answer_counts", LEGACY,
         _original_only(make_load_checkpoint)),
    Seam(RAY_TRAINER, "RayPPOTrainer._update_actor", ("self", "batch"), "rehearsal", LEGACY,
         _original_only(make_update_actor)),
    Seam(RAY_TRAINER, "RayPPOTrainer.init_workers", ("self",), "startup", LEGACY,
         _original_only(make_startup_check, LEGACY)),
    Seam(V1_TRAINER, "PPOTrainer._compute_advantage", ("self", "batch", "metrics"), "advantage_inputs", V1,
         make_v1_compute_advantage),
    Seam(V1_TRAINER, "PPOTrainer._save_checkpoint", ("self",), "answer_counts", V1,
         _original_only(make_save_checkpoint)),
    Seam(V1_TRAINER, "PPOTrainer._load_checkpoint", ("self",), "answer_counts", V1,
         _original_only(make_load_checkpoint)),
    Seam(V1_TRAINER, "PPOTrainer._update_actor", ("self", "batch", "metrics"), "rehearsal", V1,
         _original_only(make_v1_update_actor)),
    Seam(V1_TRAINER, "PPOTrainer.init", ("self",), "startup", V1,
         _original_only(make_startup_check, V1)),
)
# seam name -> why it was left alone; the names of the seams that fit (wrapped, or checked when only called)
REFUSED: dict[str, str] = {}
FITTED: set[str] = set()
log = logging.getLogger("rlvr_explore.verl")


def verl_version() -> str:
    try:
        return importlib.metadata.version("verl")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def supported_verl() -> str:
    """The verl range rlvr-explore declares (its ``verl`` extra in pyproject.toml)."""
    from packaging.requirements import Requirement

    try:
        requirements = importlib.metadata.requires("rlvr-explore") or []
    except importlib.metadata.PackageNotFoundError:
        return ""
    for text in requirements:
        requirement = Requirement(text)
        if requirement.name == "verl":
            return str(requirement.specifier)
    return ""


def check_version() -> None:
    """A WARNING when the installed verl is outside the declared range; each seam is still checked."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    supported, version = supported_verl(), verl_version()
    try:
        inside = not supported or Version(version) in SpecifierSet(supported)
    except InvalidVersion:
        inside = False
    if not inside:
        log.warning("rlvr-explore's verl plugin is declared for verl %s and found verl %s: each hook is checked "
                    "against verl's code as it loads, and one that does not fit is left out (with a warning)",
                    supported, version)


def _resolve(module, attribute: str):
    """(owner, name, value) of ``attribute`` ("function" or "Class.method") in ``module``."""
    owner = module
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name, getattr(owner, name)


def fit_seam(seam: Seam, module) -> bool:
    """Wrap (or check) one seam of an imported module when its parameters are those the plugin was
    written against; otherwise leave verl's attribute untouched, record why and say so at WARNING."""
    if seam.name in FITTED:
        return True
    try:
        owner, name, original = _resolve(module, seam.attribute)
        found = tuple(inspect.signature(original).parameters)
    except (AttributeError, TypeError, ValueError) as error:
        found, reason = None, f"not found ({error})"
    if found is not None:
        reason = None if found == seam.parameters else f"has parameters {found}, the plugin expects {seam.parameters}"
    if reason is not None:
        REFUSED[seam.name] = reason
        log.warning("rlvr-explore left verl %s's %s alone: it %s. Unavailable: %s", verl_version(), seam.name, reason,
                    NEEDS[seam.serves])
        return False
    if seam.wrap is not None and not hasattr(original, "rlvr_explore_original"):
        setattr(owner, name, seam.wrap(original, module))
    FITTED.add(seam.name)
    return True


class PatchAfterImport:
    """A meta-path finder that fits the seams of a verl module right after it executes, before any
    other module can import names from it."""

    def find_spec(self, name, path, target=None):
        if not any(seam.module == name for seam in SEAMS):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            execute = spec.loader.exec_module

            def execute_and_patch(module):
                execute(module)
                fit_module(module)

            spec.loader.exec_module = execute_and_patch
        return spec


def fit_module(module) -> None:
    for seam in SEAMS:
        if seam.module == module.__name__:
            fit_seam(seam, module)


def install() -> None:
    check_version()
    for name in {seam.module for seam in SEAMS}:
        if name in sys.modules:
            fit_module(sys.modules[name])
    if not any(isinstance(finder, PatchAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, PatchAfterImport())


# ---------------------------------------------------------------- the start-up check


def needs_of_run(config) -> dict[str, str]:
    """What a verl run's config asks of the plugin: need -> the setting that asks for it. Reading
    the settings also checks them (unknown hyper-parameters, a bad RLVR_EXPLORE_HP)."""
    actor = config.actor_rollout_ref.actor
    needs = {}
    mode = str(_get(_get(actor, "policy_loss"), "loss_mode", ""))
    if mode.startswith(PREFIX):
        needs["losses"] = f"actor_rollout_ref.actor.policy_loss.loss_mode={mode}"
        if selected_method(actor) is None:
            raise RuntimeError(f"{needs['losses']}: rlvr-explore has no method {mode[len(PREFIX):]!r}; "
                               f"its methods: {', '.join(losses.available())}")
        request = statistics_needed(actor)
        if request is not None:
            needs["statistics"] = needs["losses"]
            if request.candidates:
                needs["candidates"] = needs["losses"]
            if request.batch_gate:
                needs["train_batch"] = needs["losses"]
    estimator = selected_estimator(config.algorithm.adv_estimator)
    if estimator is not None:
        needs["losses"] = needs.get("losses", f"algorithm.adv_estimator={PREFIX}{estimator}")
        shaping, hp = advantage_settings()
        unread = sorted(set(hp) - adv_lib.keys_read(estimator, shaping))
        if unread:
            raise RuntimeError(f"RLVR_EXPLORE_HP: {unread} are not read by algorithm.adv_estimator={PREFIX}{estimator}"
                               f"{' with shaping ' + str(list(shaping)) if shaping else ''}")
        reads = adv_lib.inputs_read(estimator, shaping)
        if reads:
            needs["advantage_inputs"] = f"algorithm.adv_estimator={PREFIX}{estimator}" + (
                f" with shaping {list(shaping)}" if shaping else "")
        if "answers" in reads:
            needs["answer_counts"] = needs["advantage_inputs"]
    if dph_settings() is not None:
        needs["rehearsal"] = needs["train_batch"] = "RLVR_EXPLORE_HP dph_rehearsal"
    return needs


def settings_refusal(config, needs: dict[str, str]) -> str | None:
    """A verl setting under which what the run needs cannot work, or None."""
    actor = config.actor_rollout_ref.actor
    worker_side = {"statistics", "candidates", "train_batch", "rehearsal"} & set(needs)
    if worker_side and str(_get(actor, "strategy", "fsdp")) not in ("fsdp", "fsdp2"):
        return (f"{needs[min(worker_side)]} runs in rlvr-explore's hooks on verl's FSDP engine; "
                f"actor_rollout_ref.actor.strategy={_get(actor, 'strategy')} has none (use fsdp or fsdp2)")
    model = config.actor_rollout_ref.model
    if "candidates" in needs and _get(model, "use_fused_kernels", False):
        return f"{needs['candidates']} needs the logits: set actor_rollout_ref.model.use_fused_kernels=False"
    correction = _get(config.algorithm, "rollout_correction")
    if "advantage_inputs" in needs and _get(correction, "bypass_mode", False):
        shaping, _ = advantage_settings()
        if "entropy" in adv_lib.inputs_read(selected_estimator(config.algorithm.adv_estimator), shaping):
            return (f"{needs['advantage_inputs']} reads the old policy's entropy, which verl does not compute in "
                    "bypass mode: set algorithm.rollout_correction.bypass_mode=false")
    return None


def check_run(config, trainer: str) -> None:
    """Stop before any worker starts when the run asks for what this trainer and verl cannot serve."""
    needs = needs_of_run(config)
    refusal = settings_refusal(config, needs)
    used = [seam for seam in SEAMS if seam.serves in needs and seam.trainer in (None, trainer)]
    for seam in used if refusal is None else ():
        if seam.name not in FITTED and seam.name not in REFUSED:
            importlib.import_module(seam.module)  # its import fits it
        if seam.name in REFUSED:
            refusal = (f"{needs[seam.serves]} needs rlvr-explore's hook on {seam.name}, which it left alone: "
                       f"in verl {verl_version()} it {REFUSED[seam.name]} (rlvr-explore supports verl "
                       f"{supported_verl() or TESTED_VERL})")
            break
    if refusal is not None:
        raise RuntimeError(f"rlvr-explore cannot serve this run on verl's {trainer} trainer: {refusal}")
    if needs:  # one line in the driver's log of what the run takes from the plugin
        print(f"rlvr-explore on verl {verl_version()}'s {trainer} trainer: {', '.join(sorted(set(needs.values())))}; "
              f"hooks: {', '.join(seam.name for seam in used)}", flush=True)


try:  # loaded by verl's entry-point discovery: register now; without verl, importing is harmless
    import verl.trainer.ppo.core_algos  # noqa: F401
except ImportError:
    pass
else:
    install()
    if all(seam.name in FITTED for seam in SEAMS if seam.serves == "losses"):
        register()
