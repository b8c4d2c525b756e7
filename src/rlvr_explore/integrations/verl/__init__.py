"""verl plugin: every rlvr-explore loss and advantage estimator inside verl (0.9.x).

One module per concern: ``settings`` (what a run asks, from verl's config and RLVR_EXPLORE_HP),
``registry`` (our losses and estimators in verl's public registries), ``engine`` (the workers'
hooks), ``driver`` (the trainers' hooks), ``rehearsal`` (DPH-RL), ``seams`` (the table of every verl
function touched, fitted against its signature, and the start-up check), ``state`` (the one object
of state). Installed as the entry point ``rlvr_explore`` of the group ``verl.plugins``, which verl imports
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

from . import seams
from .driver import make_compute_old_log_prob, make_load_checkpoint, make_save_checkpoint, prompt_keys
from .engine import candidate_columns, gather_rows, make_ppo_loss
from .registry import register
from .rehearsal import (REHEARSAL_FIELDS, REHEARSAL_KEY, REHEARSAL_METRIC, dph_settings, draw_rehearsal_chunk,
                        load_rehearsal_set, make_update_actor, rehearsal_batch, rehearsal_tensors)
from .seams import LEGACY, NEEDS, SEAMS, V1, Seam, check_run, install
from .settings import (ENTROPY_KEY, ESTIMATORS, VERL_WITHOUT_DUAL_CLIP, advantage_settings,
                       environment_hyperparameters, loss_hyperparameters, statistics_needed)
from .state import MICRO_BATCH_STATISTICS, STATE, ActorState, DriverState

try:  # loaded by verl's entry-point discovery: register now; without verl, importing is harmless
    import verl.trainer.ppo.core_algos  # noqa: F401
except ImportError:
    pass
else:
    seams.install()
    if all(seam.name in STATE.fitted for seam in seams.SEAMS if seam.serves == "losses"):
        register()
