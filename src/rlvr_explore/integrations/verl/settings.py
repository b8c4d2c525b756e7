"""What a verl run asks of rlvr-explore, read from verl's config and ``RLVR_EXPLORE_HP``: the method
and its bound loss, the statistics it needs, the estimator's settings."""

from __future__ import annotations

import os
from typing import NamedTuple

import yaml

from rlvr_explore import advantages as adv_lib
from rlvr_explore import losses
from rlvr_explore.integrations.spelling import VERL_POLICY_LOSS_FIELDS

from .state import STATE

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
# verl's own policy_loss keys -> our loss hyper-parameters, from the one table of every engine's spelling
VERL_POLICY_LOSS_KEYS = {verl_key: key for key, verl_key in VERL_POLICY_LOSS_FIELDS.items()}
GATE_KEY = "rlvr_token_gate"
# verl's vanilla loss bounds A < 0 tokens by clip_ratio_c (dual clip); its gspo and clip_cov losses do not
VERL_WITHOUT_DUAL_CLIP = {"gspo", "gspo_n", "clip_cov"}
# loss settings verl applies itself, around the policy loss or in its aggregation: set in verl's config
VERL_OWNED_KEYS = {"entropy_coeff": "actor.entropy_coeff", "kl_coef": "actor.use_kl_loss and kl_loss_coef",
                   "loss_agg_mode": "actor.loss_agg_mode", "max_response_length": "actor.loss_scale_factor"}


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
    accepted = spec.accepted_keys - set(VERL_OWNED_KEYS)
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
            owned = [f"{key} is set through verl's {VERL_OWNED_KEYS[key]}" for key in unknown if key in VERL_OWNED_KEYS]
            hint = f" ({'; '.join(owned)})" if owned else ""
            raise ValueError(f"{source}: {unknown} do not apply to loss '{method}'{hint}; it takes {sorted(accepted)}")
        hp.update(extra)
    return hp


def selected_method(config) -> str | None:
    """Our method named by ``actor.policy_loss.loss_mode`` (``rlvr_<method>``), or None."""
    mode = _get(_get(config, "policy_loss"), "loss_mode", "")
    method = mode[len(PREFIX):] if isinstance(mode, str) and mode.startswith(PREFIX) else None
    return method if method in losses.available() else None


def bound_loss(method: str, config) -> losses.BoundLoss:
    """``method`` bound to what verl's actor ``config`` and RLVR_EXPLORE_HP set: read and checked
    once per config object and environment, not for every micro-batch."""
    key = (method, id(config), os.environ.get("RLVR_EXPLORE_HP", ""))
    cached = STATE.bound_losses.get(key)
    if cached is None or cached[0] is not config:  # the config is kept, so its id cannot be reused
        cached = STATE.bound_losses[key] = (config, losses.bind(method, loss_hyperparameters(method, config)))
    return cached[1]


class StatisticsRequest(NamedTuple):
    method: str
    loss: losses.BoundLoss
    candidates: bool  # entropy and top-N per token, from the model-output hook
    batch_gate: bool  # a selection over the whole mini-batch, from the pass before training


def statistics_needed(config) -> StatisticsRequest | None:
    """What the selected method needs beyond log-probs, or None when log-probs suffice."""
    method = selected_method(config)
    if method is None:
        return None
    bound = bound_loss(method, config)
    request = StatisticsRequest(method, bound, method in CANDIDATE_METHODS, bound.batch_wide_gate)
    return request if request.candidates or request.batch_gate else None


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
