r"""verl's ``PolicyLossConfig`` with one more field, ``rlvr``: rlvr-explore's loss hyper-parameters
as verl config keys (names as in docs/methods.md).

verl 0.9's ``PolicyLossConfig`` is a dataclass that rejects keys it does not declare, so a Hydra
``+`` override cannot add ours to it; its ``_target_`` can point here instead::

    python -m verl.trainer.main_ppo \
      actor_rollout_ref.actor.policy_loss.loss_mode=rlvr_casp \
      actor_rollout_ref.actor.policy_loss._target_=rlvr_explore.integrations.verl_config.ExplorePolicyLossConfig \
      '+actor_rollout_ref.actor.policy_loss.rlvr={alpha: 0.01, lam: 1.1, top_n: 3, q: 0.8}'

(quoted: unquoted, bash would split the braces into four words). The same in a config file:
``configs/verl/casp_math.yaml``.

Imported by Hydra when verl builds its config, never by ``import rlvr_explore``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from verl.workers.config import PolicyLossConfig


@dataclass
class ExplorePolicyLossConfig(PolicyLossConfig):
    rlvr: dict = field(default_factory=dict)  # hyper-parameters of the rlvr_<method> loss_mode
