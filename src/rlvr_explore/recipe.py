"""A method's recipe, resolved once: the ``algorithm:`` section of a config, its loss bound to
its typed hyper-parameters and its advantage estimator and shaping steps to theirs.

Every engine holds the same :class:`Recipe`: the built-in trainer (one per method, a warm-up
method included), TRL's ``ExploreGRPOTrainer``, the verl plugin and NeMo-RL's loss. The walk of a
setting from YAML to the gradient, for CaSP's alpha::

    algorithm: {method: casp, loss: {alpha: 0.3}}        # the YAML file
    AlgorithmConfig.loss -> resolve() -> CaspConfig      # this module binds it, once
    casp(inputs, cfg) reads cfg.alpha                    # losses/casp.py

A key that the method, the estimator or a shaping step does not read is refused here, with the
keys they do read (``rlvr-explore train --help-config --method casp`` lists them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvr_explore import advantages as adv_lib
from rlvr_explore import losses
from rlvr_explore.documented import documented


@dataclass
class AlgorithmConfig:
    method: str = documented("grpo", "policy loss, any of `rlvr-explore methods`")
    advantage: str | None = documented(None, "advantage estimator (default: the method's own)")
    shaping: list = documented([], "advantage shaping steps in order: entropy_adv, ppl_shaping, position_bonus, "
                                   "outcome_ucb, outcome_batch")
    loss: dict = documented({}, "the method's hyper-parameters, e.g. {alpha: 0.01, lam: 1.1} for casp "
                                "(`--help-config --method casp` lists them; docs/methods.md)")
    advantage_hp: dict = documented({}, "advantage hyper-parameters, e.g. {passk_k: 4} (docs/methods.md)")
    kl_coef: float = documented(0.0, "beta of the k3 KL to the reference model (CaSP §2: 0.001); > 0 loads a reference")
    entropy_coeff: float = documented(0.0, "entropy bonus c (CaSP baseline 0.01)")
    ppo_epochs: int = documented(1, "passes over each step's rollouts")
    mini_batch_size: int = documented(128, "responses per optimizer step (CaSP App. E: 256 of 1024 for math)")
    micro_batch_size: int = documented(64, "responses per forward/backward; gradients accumulate over a mini-batch")
    micro_batch_tokens: int = documented(0, "if > 0, also at most this many padded tokens (responses x their longest "
                                            "prompt + response) per forward/backward, as verl's use_dynamic_bsz: "
                                            "short responses share a pass, long ones get fewer rows")
    dynamic_sampling: bool = documented(False, "DAPO: drop groups whose rewards are all equal and resample (SPS App. B.2)")
    max_resample: int = documented(3, "DAPO: extra sampling rounds to refill the batch")
    warmup_method: str | None = documented(None, "method used for the first warmup_method_steps (CaSP logic tasks: 50 steps of grpo)")
    warmup_method_steps: int = documented(0, "steps of warmup_method before switching to method")
    kl_reset_every: int = documented(0, "ProRL (STILL §4.3): every M steps reference <- policy and optimizer state reset; 0 off")


# algorithm-level settings that the loss config carries too: set once, at the algorithm level
ALGORITHM_LEVEL_KEYS = ("kl_coef", "entropy_coeff")


@dataclass(frozen=True)
class Recipe:
    """One method, resolved: its bound loss, its estimator and shaping steps with their config."""

    loss: losses.BoundLoss
    estimator: str
    shaping: tuple[str, ...]
    advantage_config: adv_lib.AdvantageConfig

    @property
    def method(self) -> str:
        return self.loss.name

    @property
    def advantage_inputs(self) -> frozenset[str]:
        """What the estimator and its shaping steps read beyond rewards, groups and mask."""
        return adv_lib.inputs_read(self.estimator, self.shaping)

    def advantages(self, rewards: torch.Tensor, group_ids: torch.Tensor, response_mask: torch.Tensor,
                   **inputs) -> torch.Tensor:
        """Token advantages (B, T); ``inputs`` are those of :func:`rlvr_explore.advantages.compute_advantages`
        (entropy, old_logp, step, answers, ...)."""
        return adv_lib.compute_advantages(self.estimator, rewards, group_ids, response_mask, shaping=self.shaping,
                                          config=self.advantage_config, **inputs)


def resolve(method: str, loss: dict | None = None, *, advantage: str | None = None, shaping=(),
            advantage_hp: dict | None = None, kl_coef: float = 0.0, entropy_coeff: float = 0.0,
            names: dict[str, str] | None = None) -> Recipe:
    """The recipe of ``method`` with these settings (the keys of ``algorithm:``), every key checked:
    ValueError naming the key, what was wrong and what is accepted. ``names`` spells the keys as
    the engine that calls does (TRL: ``{"algorithm.advantage_hp": "advantage_hp", ...}``)."""
    loss, advantage_hp = dict(loss or {}), dict(advantage_hp or {})
    name = lambda key: (names or {}).get(key, key)  # noqa: E731
    spec = losses.get_method(method)
    for key in ALGORITHM_LEVEL_KEYS:
        if key in loss:
            raise ValueError(f"algorithm.loss.{key}: set algorithm.{key} instead (it also decides what the trainer loads)")
    try:
        bound = losses.bind(spec, {**loss, "kl_coef": kl_coef, "entropy_coeff": entropy_coeff})
    except ValueError as error:
        raise ValueError(f"{name('algorithm.loss')}: {error}") from None
    try:
        advantage_config = adv_lib.checked_config(advantage_hp)
    except ValueError as error:
        raise ValueError(f"{name('algorithm.advantage_hp')}: {error}") from None
    estimator = advantage or spec.advantage
    if estimator not in adv_lib.ESTIMATORS:
        raise ValueError(f"{name('algorithm.advantage')}={estimator!r} is not an estimator; one of {', '.join(sorted(adv_lib.ESTIMATORS))}")
    unknown_steps = [step for step in shaping if step not in adv_lib.SHAPINGS]
    if unknown_steps:
        raise ValueError(f"{name('algorithm.shaping')}: unknown steps {unknown_steps}; available: {', '.join(sorted(adv_lib.SHAPINGS))}")
    read = adv_lib.keys_read(estimator, shaping)
    unread = sorted(set(advantage_hp) - read)
    if unread:
        raise ValueError(f"{name('algorithm.advantage_hp')}: {unread} are not read by {name('algorithm.advantage')}={estimator!r}"
                         f"{' with ' + name('algorithm.shaping') + '=' + str(list(shaping)) if shaping else ''} (it reads {', '.join(sorted(read))})")
    return Recipe(bound, estimator, tuple(shaping), advantage_config)


def recipes(algorithm: AlgorithmConfig) -> dict[str, Recipe]:
    """The recipe of ``algorithm.method`` and of its warm-up method, by name. ``algorithm.loss``
    may hold keys of either, each method taking those it reads; a key neither reads is refused.
    ``advantage_hp`` is checked against the method's estimator; the warm-up's takes what it reads."""
    names = [m for m in (algorithm.method, algorithm.warmup_method) if m]
    for name in names:
        if name not in losses.available():
            raise ValueError(f"algorithm.method {name!r} is not a registered loss; available: {', '.join(losses.available())}")
    accepted = frozenset().union(*(losses.get_method(name).accepted_keys for name in names)) - set(ALGORITHM_LEVEL_KEYS)
    for key in algorithm.loss:
        if key not in accepted and key not in ALGORITHM_LEVEL_KEYS:
            raise ValueError(f"algorithm.loss: unknown key {key!r} for {' / '.join(names)}; accepted: {', '.join(sorted(accepted))}")
    resolved = {}
    for name in names:
        spec = losses.get_method(name)
        advantage_hp = algorithm.advantage_hp
        if name != algorithm.method:
            read = adv_lib.keys_read(algorithm.advantage or spec.advantage, algorithm.shaping)
            advantage_hp = {k: v for k, v in advantage_hp.items() if k in read}
        loss = {k: v for k, v in algorithm.loss.items() if k in spec.accepted_keys or k in ALGORITHM_LEVEL_KEYS}
        resolved[name] = resolve(name, loss, advantage=algorithm.advantage, shaping=algorithm.shaping,
                                 advantage_hp=advantage_hp, kl_coef=algorithm.kl_coef, entropy_coeff=algorithm.entropy_coeff)
    return resolved
