"""TRL: ``ExploreGRPOTrainer``, a ``GRPOTrainer`` whose loss is any rlvr-explore method.

Moving a TRL script over changes one import; it then trains exactly as before (``method`` defaults
to ``"grpo"``, which keeps GRPOTrainer's own loss for its ``loss_type``, and adds Lambda^(n) to the
logs). One config line then picks a method::

    from rlvr_explore.integrations.trl import ExploreGRPOConfig as GRPOConfig, ExploreGRPOTrainer as GRPOTrainer
    args = GRPOConfig(..., method="casp")              # casp_alpha=0.01, casp_lam=1.1, ... as needed

The seam is ``_get_per_token_logps_and_entropies``: the model runs with ``logits_to_keep`` (so
multi-GPU wrappers see an ordinary forward and only completion logits exist) and
``rlvr_explore.candidates.token_stats`` returns the log-probs, the entropy and the top-N at the
sampling temperature in one pass. For any method but ``grpo``, ``_compute_loss`` then calls
``rlvr_explore.losses.policy_loss`` and logs, beside TRL's own ``entropy``, ``kl`` and
``clip_ratio/*`` keys, Lambda^(n), the entropy of gated tokens and the share of responses with
zero advantage. Multimodal inputs fall back to TRL's own path (and its losses).
``advantage`` (with ``advantage_shaping``) replaces TRL's group normalisation with any rlvr-explore
estimator, computed on every process's rewards as TRL gathers them. Those that read the old policy's
log-probs or entropy (unlikeliness, GTPO, GRPO-S, ``entropy_adv``, ``ppl_shaping``) get them from one
no-grad pass per generation batch, gathered across processes; outcome exploration reads final
answers from the trainer's ``answer_fn`` and keeps its counts in each checkpoint.
``dph_divergence`` adds DPH-RL's rehearsal term (arXiv 2509.07430): before training, the initial
policy samples the training prompts; those it always solves leave the RL set and its correct
responses to them, with its log-probs, are rehearsed at every step (``rehearsal-<process>.pt`` in
``output_dir``, reused on resume).
Tested with TRL 1.10 to 1.16.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Callable

import torch
from accelerate.utils import gather_object
from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig, GRPOTrainer

from rlvr_explore import advantages as adv_lib
from rlvr_explore import losses
from rlvr_explore.candidates import token_stats
from rlvr_explore.losses.rehearsal import DIVERGENCES, DPHConfig, kept_correct, mastered, rehearsal_loss
from rlvr_explore.metrics import rank_logprobs
from rlvr_explore.recipe import Recipe, resolve
from rlvr_explore.integrations.spelling import TRL_LOSS_FIELDS

logger = logging.getLogger(__name__)

# DPHConfig fields the TRL config carries as dph_<name> (beside dph_divergence)
DPH_FIELDS = ("coef", "alpha", "presample", "samples", "keep_per_prompt", "chunk")

# config field -> loss hyper-parameter, from the one table of every engine's spelling
HYPERPARAMETER_FIELDS = {field: key for key, field in TRL_LOSS_FIELDS.items()}

# the keys of the built-in trainer's ``algorithm:`` as this config spells them, for error messages
TRL_NAMES = {"algorithm.loss": "loss settings", "algorithm.advantage": "advantage", "algorithm.shaping": "advantage_shaping",
             "algorithm.advantage_hp": "advantage_hp"}


@dataclass
class ExploreGRPOConfig(GRPOConfig):
    """``GRPOConfig`` plus the rlvr-explore method and its hyper-parameters (docs/methods.md).

    TRL's ``epsilon``/``epsilon_high``, ``beta`` (k3 KL) and ``entropy_coef`` still apply; the
    aggregation follows ``loss_agg_mode`` (default: the method's own).
    """

    method: str = field(default="grpo", metadata={"help": "rlvr-explore policy loss: casp, grpo_n, kl_cov, ... (`rlvr-explore methods`); 'grpo' (default) keeps TRL's own loss for its loss_type."})
    loss_agg_mode: str | None = field(default=None, metadata={"help": "token-mean, seq-mean-token-mean, seq-mean-token-sum or seq-mean-token-sum-norm; None: the method's default."})
    casp_alpha: float | None = field(default=None, metadata={"help": "CaSP smoothing alpha in [0, 1] (CaSP §4.1 Eq. 4; App. E math 0.01, logic 0.005, code 0.05)."})
    casp_top_n: int = field(default=3, metadata={"help": "N top candidates tracked and smoothed over (CaSP §4.1, App. E: 3)."})
    casp_lam: float | None = field(default=None, metadata={"help": "CaSP rank-1 penalty lambda > 1 on negatives (CaSP §4.2 Eq. 5; App. E 1.1)."})
    entropy_quantile: float | None = field(default=None, metadata={"help": "q of the entropy gate H > quantile_q(H) (CaSP App. E 0.8; forking tokens 0.8)."})
    quantile_scope: str | None = field(default=None, metadata={"help": "'response' (CaSP App. E) or 'batch' (SimKO text, forking tokens) for the entropy quantile."})
    casp_positive_on: str | None = field(default=None, metadata={"help": "CaSP positive branch on 'advantage' > 0 (paper) or 'reward' == 1 (official code)."})
    kl_cov_ratio: float | None = field(default=None, metadata={"help": "KL-Cov: fraction of tokens by covariance (Cui et al. 2025: 2e-3)."})
    kl_cov_coef: float | None = field(default=None, metadata={"help": "KL-Cov: beta_kl (Cui et al. 2025: 1)."})
    clip_cov_ratio: float | None = field(default=None, metadata={"help": "Clip-Cov: fraction of tokens cut (Cui et al. 2025: 2e-4)."})
    clip_cov_lb: float | None = field(default=None, metadata={"help": "Clip-Cov lower covariance bound (Cui et al. 2025: 1)."})
    clip_cov_ub: float | None = field(default=None, metadata={"help": "Clip-Cov upper covariance bound (Cui et al. 2025: 5)."})
    advantage: str | None = field(default=None, metadata={"help": "rlvr-explore advantage estimator in place of TRL's group normalisation: " + ", ".join(sorted(adv_lib.ESTIMATORS)) + " (docs/methods.md); None keeps TRL's."})
    advantage_shaping: list[str] | None = field(default=None, metadata={"help": "shaping steps applied after the estimator, in order: " + ", ".join(sorted(adv_lib.SHAPINGS)) + " (outcome_ucb / outcome_batch need the trainer's answer_fn)."})
    advantage_hp: dict | None = field(default=None, metadata={"help": "their hyper-parameters, e.g. {'pkpo_k': 4} or {'outcome_variant': 'ucb_con'} (docs/methods.md)."})

    dph_divergence: str | None = field(default=None, metadata={"help": "DPH-RL rehearsal to the initial policy (arXiv 2509.07430): " + ", ".join(DIVERGENCES) + "; None: off."})
    dph_coef: float | None = field(default=None, metadata={"help": f"weight of the rehearsal term (default {DPHConfig.coef}; official scripts: forward 0.01-0.05, JS 0.05-0.2)."})
    dph_alpha: float | None = field(default=None, metadata={"help": f"a of the alpha divergence, in (0, 1) (default {DPHConfig.alpha})."})
    dph_presample: int | None = field(default=None, metadata={"help": f"pi_0 samples per training prompt; prompts solved (reward > 0.5) in all are rehearsed, not trained with RL (default {DPHConfig.presample}, DPH-RL README)."})
    dph_samples: int | None = field(default=None, metadata={"help": f"pi_0 samples per rehearsed prompt, whose correct ones are candidates for the rehearsal set (default {DPHConfig.samples})."})
    dph_keep_per_prompt: int | None = field(default=None, metadata={"help": f"correct pi_0 responses kept per rehearsed prompt (default {DPHConfig.keep_per_prompt}, as the official set; 0 keeps all)."})
    dph_chunk: int | None = field(default=None, metadata={"help": f"rehearsal responses per optimizer step and process, split over its gradient-accumulation micro-batches (default {DPHConfig.chunk})."})

    def __post_init__(self):
        super().__post_init__()
        self._check_dph()
        spec = losses.get_method(self.method)  # unknown names fail here, listing the available ones
        accepted = set() if self.method == "grpo" else spec.accepted_keys
        ignored = [name for name, key in {**HYPERPARAMETER_FIELDS, "loss_agg_mode": "loss_agg_mode"}.items()
                   if getattr(self, name) is not None and key not in accepted and name != "casp_top_n"]  # top-N also sizes Lambda^(n)
        if ignored:
            takes = sorted(n for n, k in HYPERPARAMETER_FIELDS.items() if k in accepted)
            raise ValueError(f"{ignored} would have no effect with method={self.method!r}"
                             + (" (TRL's own loss: set loss_type instead)" if self.method == "grpo" else "")
                             + f"; it takes {takes or 'none of them'}")
        if self.advantage is None and (self.advantage_hp or self.advantage_shaping):
            raise ValueError("advantage_hp and advantage_shaping would have no effect without advantage=...")
        self.recipe()  # every other setting checked now, not at the first step

    def recipe(self) -> Recipe:
        """The method resolved with these settings (the trainer binds it once); with
        ``advantage=None`` its estimator part is unused (TRL normalises the rewards itself)."""
        return resolve(self.method, self.loss_hyperparameters(), advantage=self.advantage,
                       shaping=tuple(self.advantage_shaping or ()), advantage_hp=self.advantage_hp,
                       kl_coef=self.beta, entropy_coeff=self.entropy_coef or 0.0, names=TRL_NAMES)

    def _dph_given(self) -> dict:
        """The ``dph_*`` fields set, by ``DPHConfig`` name."""
        return {name: getattr(self, f"dph_{name}") for name in DPH_FIELDS if getattr(self, f"dph_{name}") is not None}

    def _check_dph(self) -> None:
        if self.dph_divergence is None:
            given = [f"dph_{name}" for name in self._dph_given()]
            if given:
                raise ValueError(f"{given} would have no effect without dph_divergence (one of {', '.join(DIVERGENCES)})")
            return
        self.dph().validate(prefix="dph_")

    def dph(self) -> DPHConfig | None:
        """DPH-RL's settings, the unset ones at the built-in trainer's defaults; None when off."""
        if self.dph_divergence is None:
            return None
        return DPHConfig(enabled=True, divergence=self.dph_divergence, **self._dph_given())

    def loss_hyperparameters(self) -> dict:
        """The hyper-parameters to pass to ``policy_loss`` for ``method``: those it takes and that
        are set, plus TRL's clip range."""
        spec = losses.get_method(self.method)
        accepted = spec.accepted_keys
        hp = {"clip_eps_low": self.epsilon, "clip_eps_high": self.epsilon_high if self.epsilon_high is not None else self.epsilon}
        if self.loss_agg_mode is not None:
            hp["loss_agg_mode"] = self.loss_agg_mode
        for name, key in HYPERPARAMETER_FIELDS.items():
            value = getattr(self, name)
            if value is not None and key in accepted:
                hp[key] = value
        if spec.defaults.get("clip_eps_low") is not None and self.epsilon == 0.2:
            hp.pop("clip_eps_low")  # GSPO's own 3e-4 / 4e-4 unless the user set a clip
            hp.pop("clip_eps_high")
        return hp


def _concatenate_padded(tensors: list[torch.Tensor], left: bool) -> torch.Tensor:
    """Rows of (n, T_i) tensors, zero-padded on the left or the right to the widest T."""
    width = max(t.shape[1] for t in tensors)
    pad = lambda t: (width - t.shape[1], 0) if left else (0, width - t.shape[1])  # noqa: E731
    return torch.cat([torch.nn.functional.pad(t, pad(t)) for t in tensors])


class ExploreGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with rlvr-explore's candidate statistics and policy losses."""

    def __init__(self, *args, answer_fn: Callable[[dict, str], object] | None = None, **kwargs):
        """``answer_fn(example, completion_text)``: the final answer of a completion (None if it has
        none), for outcome exploration's counts; ``example`` is the dataset row it answers."""
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, ExploreGRPOConfig):
            raise TypeError("ExploreGRPOTrainer needs an ExploreGRPOConfig (it carries `method`)")
        if self.args.method != "grpo" and getattr(self, "use_adaptive_entropy", False):
            raise ValueError(f"method={self.args.method!r} takes a fixed entropy_coef; TRL's adaptive entropy control "
                             "(entropy_target) changes it on the trainer, which only TRL's own loss (method='grpo') reads")
        self.recipe = self.args.recipe()  # bound once; kept here, as the config is pickled with checkpoints
        if "answers" in self._advantage_reads() and answer_fn is None:
            raise ValueError(f"advantage_shaping {self.args.advantage_shaping} counts final answers: pass "
                             "ExploreGRPOTrainer(..., answer_fn=lambda example, completion: <its answer or None>)")
        self.answer_fn = answer_fn
        self.answer_counts: dict = {}  # (prompt, answer) -> times seen, for outcome exploration; checkpointed
        self.rehearsal: dict | None = None  # DPH-RL's set on this process: prompt/completion ids, masks, pi_0 log-probs
        self._rehearsal_draws = torch.Generator().manual_seed(self.args.seed + self.accelerator.process_index)
        self._candidates = None

    def _advantage_reads(self) -> frozenset[str]:
        return self.recipe.advantage_inputs if self.args.advantage is not None else frozenset()

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._gathered_rewards = rewards_per_func  # every process's, as TRL normalises them
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.args.advantage is None:
            return output
        # TRL's weighted sum of the reward functions; a completion no function scored gets 0, as in TRL
        per_func = self._gathered_rewards
        unscorable = torch.isnan(per_func).all(dim=1)
        rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        generations = self.num_generations if self.model.training else self.num_generations_eval
        group_ids = torch.arange(len(rewards), device=rewards.device) // generations
        reads = self._advantage_reads()
        inputs_read = self._per_token_inputs(output, reads) if reads & {"old_logp", "entropy"} else {}
        mask = inputs_read.pop("mask", torch.ones(len(rewards), 1, device=rewards.device))
        if "answers" in reads:
            inputs_read.update(self._answers(inputs, output))
        advantages = self.recipe.advantages(rewards, group_ids, mask, step=self.state.global_step,
                                            **inputs_read).masked_fill(unscorable[:, None], 0.0)
        # per-token advantages (B, T) where the estimator reads tokens, as TRL's loss accepts; (B,) otherwise
        advantages = advantages if mask.shape[1] > 1 else advantages[:, 0]
        self._log_advantages(advantages, mask)
        local = len(output["advantages"])
        start = self.accelerator.process_index * local
        mine = advantages[start : start + local]
        output["advantages"] = (mine[:, : output["completion_ids"].shape[1]] if mine.dim() == 2 else mine).to(
            output["advantages"].dtype)
        return output

    def _gathered(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's rows of a (B, T) tensor, right-padded with 0 to the longest T."""
        return self.accelerator.gather(self.accelerator.pad_across_processes(tensor, dim=1, pad_index=0))

    def _per_token_inputs(self, output, reads: frozenset[str]) -> dict:
        """The old policy's log-probs and entropy of every process's completions, and the completion
        mask. TRL's own old log-probs where it computed them; otherwise, or for the entropy, one
        no-grad pass."""
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        inputs = {"old_logp": output.get("old_per_token_logps")}
        if "entropy" in reads or inputs["old_logp"] is None:
            with torch.no_grad():
                logp, entropy, _, _ = self._candidate_stats(
                    self.model, torch.cat([output["prompt_ids"], completion_ids], 1),
                    torch.cat([output["prompt_mask"], completion_mask], 1), completion_ids.size(1))
            inputs = {"old_logp": logp if inputs["old_logp"] is None else inputs["old_logp"], "entropy": entropy}
        inputs["mask"] = completion_mask if "tool_mask" not in output else completion_mask * output["tool_mask"]
        return {name: self._gathered(tensor) for name, tensor in inputs.items()}

    def _answers(self, inputs, output) -> dict:
        """Every process's final answers and question ids (the prompt, as JSON) for outcome exploration."""
        texts = self.processing_class.batch_decode(output["completion_ids"], skip_special_tokens=True)
        # evaluation reads the counts but never adds to them: only training samples are explored
        counts = self.answer_counts if self.model.training else dict(self.answer_counts)
        return {"answers": gather_object([self.answer_fn(example, text) for example, text in zip(inputs, texts)]),
                "prompt_ids": gather_object([json.dumps(example["prompt"], sort_keys=True) for example in inputs]),
                "answer_counts": counts}

    def _log_advantages(self, advantages, mask) -> None:
        """Replace the advantages TRL logged for this batch (its completions table) with ours."""
        logged = getattr(self, "_logs", {}).get("advantages")
        if logged is None:  # a TRL without the completions table
            return
        for _ in range(min(len(advantages), len(logged))):
            logged.pop()
        per_response = advantages if advantages.dim() == 1 else adv_lib.response_mean(advantages, mask.bool())
        logged.extend(per_response.tolist())

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.answer_counts and self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
            adv_lib.save_answer_counts(folder, self.answer_counts)

    def _candidate_stats(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None):
        batch_size = batch_size or input_ids.size(0)
        parts = []
        for start in range(0, input_ids.size(0), batch_size):
            ids = input_ids[start : start + batch_size]
            mask = attention_mask[start : start + batch_size]
            with self.accelerator.autocast():
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1).logits
            parts.append(token_stats(logits[:, :-1], ids[:, -logits_to_keep:], top_n=self.args.casp_top_n,
                                     temperature=self.temperature))
        cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
        return cat("logp"), cat("entropy"), cat("topn_logp"), cat("topn_ids")

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        if compute_aux_loss or any(v is not None for v in multimodal.values()):
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, batch_size,
                                                              compute_entropy, compute_aux_loss, **multimodal)
        logp, entropy, topn_logp, topn_ids = self._candidate_stats(model, input_ids, attention_mask, logits_to_keep, batch_size)
        self._candidates = (topn_logp, topn_ids)
        return logp, (entropy if compute_entropy else None), None

    def _compute_loss(self, model, inputs):
        loss = self._policy_loss(model, inputs)
        if self.rehearsal is None:
            return loss
        return loss + self._rehearsal_term(model)

    def _policy_loss(self, model, inputs):
        if self.args.method == "grpo" or self.aux_loss_enabled or inputs.get("pixel_values") is not None:
            self._candidates = None
            loss = super()._compute_loss(model, inputs)  # TRL's own loss; our statistics hook ran inside it
            if self._candidates is not None:
                self._log_candidates(*self._candidates, inputs["completion_mask"].bool(), inputs["advantages"])
            return loss
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        logp, entropy, topn_logp, topn_ids = self._candidate_stats(
            model, torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1),
            completion_ids.size(1))
        old_logp = inputs.get("old_per_token_logps")
        old_logp = logp.detach() if old_logp is None else old_logp
        mode = "train" if self.model.training else "eval"
        # TRL sets current_gradient_accumulation_steps inside its training loop only
        accumulation = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps) if mode == "train" else 1
        num_seqs = completion_ids.size(0) * accumulation
        num_tokens = None
        if "num_items_in_batch" in inputs:  # TRL's count of completion tokens in the generation batch
            num_tokens = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                num_tokens = num_tokens * accumulation / self.args.steps_per_generation
        loss, metrics = losses.policy_loss(
            self.recipe.loss, logp=logp, old_logp=old_logp, advantages=inputs["advantages"], response_mask=mask.bool(),
            response_ids=completion_ids, topn_logp=topn_logp, topn_ids=topn_ids, entropy=entropy,
            ref_logp=inputs.get("ref_per_token_logps"), num_tokens=num_tokens, num_seqs=num_seqs,
        )
        store = self._metrics[mode]
        for key, value in metrics.items():
            store[f"explore/{key}"].append(self.accelerator.gather(value.detach().float().reshape(1)).mean().item())
        self._log_trl_keys(store, logp.detach(), old_logp, entropy.detach(), mask.bool(), inputs["advantages"], metrics)
        self._log_candidates(topn_logp, topn_ids, mask.bool(), inputs["advantages"])
        return loss

    # ------------------------------------------------------------ DPH-RL (arXiv 2509.07430)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """Outcome exploration's counts come back from the checkpoint resumed (whatever the
        backend that loads the weights); DPH-RL's rehearsal set is built or read back first."""
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        if checkpoint:
            self.answer_counts = adv_lib.load_answer_counts(checkpoint)
        if self.args.dph() is not None and self.rehearsal is None:
            self._prepare_rehearsal(resumed=bool(checkpoint))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _rehearsal_path(self) -> str:
        return os.path.join(self.args.output_dir, f"rehearsal-{self.accelerator.process_index}.pt")

    def _prepare_rehearsal(self, resumed: bool) -> None:
        """This process's rehearsal set and the RL prompts: read back on resume, built and saved
        otherwise. Every process keeps the same RL prompts."""
        path = self._rehearsal_path()
        if resumed:
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path}: the run's DPH-RL rehearsal set is missing; it cannot be resumed alike")
            data = torch.load(path, weights_only=True)
        else:
            data = self._build_rehearsal()
            os.makedirs(self.args.output_dir, exist_ok=True)
            torch.save(data, path + ".tmp")
            os.replace(path + ".tmp", path)
        rl_rows = data.pop("rl_rows").tolist()
        if not rl_rows:
            raise ValueError("DPH-RL: the initial policy solves every training prompt in all its pre-samples; "
                             "nothing is left to train with RL")
        self.train_dataset = self.train_dataset.select(rl_rows)
        self.rehearsal = data if len(data["completion_ids"]) else None
        if self.rehearsal is None:
            logger.warning("DPH-RL: no rehearsal response on process %d; it trains with RL alone",
                           self.accelerator.process_index)

    @torch.no_grad()
    def _build_rehearsal(self) -> dict:
        """pi_0 samples ``dph_presample`` responses to each training prompt (this process takes every
        n-th); prompts solved in all of them are rehearsed and leave RL; pi_0 then samples
        ``dph_samples`` responses to each and keeps the first ``dph_keep_per_prompt`` correct ones
        with its token log-probs."""
        dph, rows = self.args.dph(), list(range(len(self.train_dataset)))
        mine = rows[self.accelerator.process_index :: self.accelerator.num_processes]
        presampled = torch.tensor(self._sample_and_score(mine, dph.presample)[-1]).view(len(mine), dph.presample)
        solved = [row for row, solved_all in zip(mine, mastered(presampled).tolist()) if solved_all]
        solved_everywhere = set(gather_object(solved))
        names = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
        data = {name: torch.zeros(0, 1, dtype=torch.long) for name in names} | {"ref_logp": torch.zeros(0, 1)}
        if solved:
            *tensors, rewards = self._sample_and_score(solved, dph.samples)
            correct = kept_correct(torch.tensor(rewards) > 0.5, dph.keep_per_prompt).flatten().to(tensors[0].device)
            data = {name: tensor[correct] for name, tensor in zip(names, tensors)}
            data["ref_logp"] = self._candidate_stats(
                self.model, torch.cat([data["prompt_ids"], data["completion_ids"]], 1),
                torch.cat([data["prompt_mask"], data["completion_mask"]], 1), data["completion_ids"].size(1))[0]
        data = {name: tensor.cpu() for name, tensor in data.items()}
        data["rl_rows"] = torch.tensor([row for row in rows if row not in solved_everywhere], dtype=torch.long)
        self._metrics["train"]["explore/dph_rehearsed_prompts"].append(float(len(solved_everywhere)))
        self._metrics["train"]["explore/dph_rehearsal_responses"].append(
            self.accelerator.gather(torch.tensor([float(len(data["completion_ids"]))], device=self.accelerator.device)).sum().item())
        return data

    def _sample_and_score(self, rows: list[int], samples: int):
        """``samples`` responses of the current (initial) policy to each dataset row, scored by the
        reward functions: left-padded prompt ids and mask, completion ids and mask (up to the first
        EOS, as TRL), and per row the list of its responses' weighted rewards."""
        tokenizer = self.processing_class
        examples = [self.train_dataset[row] for row in rows]
        if not all(isinstance(example["prompt"], str) for example in examples):
            raise ValueError("DPH-RL through TRL samples text prompts; this dataset's 'prompt' is conversational")
        if not all(callable(f) and not isinstance(f, torch.nn.Module) for f in self.reward_funcs):
            raise ValueError("DPH-RL through TRL scores pi_0's samples with callable reward functions, not reward models")
        model = self.accelerator.unwrap_model(self.model)
        parts, scores = [], []
        for start in range(0, len(examples), self.args.per_device_train_batch_size):
            batch = examples[start : start + self.args.per_device_train_batch_size]
            encoded = tokenizer([e["prompt"] for e in batch], return_tensors="pt", padding=True, padding_side="left",
                                add_special_tokens=False).to(self.accelerator.device)
            out = model.generate(**encoded, do_sample=True, temperature=self.temperature, top_p=1.0, top_k=0,
                                 max_new_tokens=self.max_completion_length, num_return_sequences=samples,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            prompt_len = encoded["input_ids"].shape[1]
            completion_ids = out[:, prompt_len:]
            is_eos = completion_ids == tokenizer.eos_token_id
            first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), completion_ids.shape[1])
            completion_mask = (torch.arange(completion_ids.shape[1], device=out.device)[None] <= first_eos[:, None]).long()
            texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
            repeated = [e for e in batch for _ in range(samples)]
            columns = {key: [e[key] for e in repeated] for key in repeated[0] if key not in ("prompt", "completion")}
            rewards = torch.zeros(len(texts))
            for weight, function in zip(self.reward_weights.tolist(), self.reward_funcs):
                values = function(prompts=[e["prompt"] for e in repeated], completions=texts,
                                  completion_ids=completion_ids.tolist(), **columns)
                rewards += weight * torch.nan_to_num(torch.tensor([math.nan if v is None else v for v in values],
                                                                  dtype=torch.float32))
            scores += rewards.view(len(batch), samples).tolist()
            parts.append((encoded["input_ids"].repeat_interleave(samples, 0), encoded["attention_mask"].repeat_interleave(samples, 0),
                          completion_ids, completion_mask))
        # prompts are left-padded, completions right-padded, to the widest batch
        stacked = [_concatenate_padded([part[i] for part in parts], left=i < 2) for i in range(4)]
        return (*stacked, scores)

    def _rehearsal_term(self, model) -> torch.Tensor:
        """coef x the token mean of f(u) over rehearsal responses drawn for this micro-batch, u the
        ratio to pi_0's stored probability; ``dph_chunk`` responses per optimizer step."""
        dph, data = self.args.dph(), self.rehearsal
        accumulation = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        draws = max(1, math.ceil(dph.chunk / accumulation))
        rows = torch.randint(len(data["completion_ids"]), (draws,), generator=self._rehearsal_draws)
        take = {name: tensor[rows].to(self.accelerator.device) for name, tensor in data.items()}
        logp = self._candidate_stats(model, torch.cat([take["prompt_ids"], take["completion_ids"]], 1),
                                     torch.cat([take["prompt_mask"], take["completion_mask"]], 1),
                                     take["completion_ids"].size(1))[0]
        term = rehearsal_loss(logp, take["ref_logp"], take["completion_mask"], dph.coef, dph.divergence, dph.alpha)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["explore/dph_rehearsal_loss"].append(
            self.accelerator.gather(term.detach().float().reshape(1)).mean().item())
        return term / accumulation

    def _log_candidates(self, topn_logp, topn_ids, mask, advantages) -> None:
        store = self._metrics["train" if self.model.training else "eval"]
        for n, value in enumerate(rank_logprobs(topn_logp.detach(), mask), start=1):
            store[f"explore/lambda{n}"].append(value)
        store["explore/zero_advantage_frac"].append(float((advantages.reshape(advantages.shape[0], -1) == 0).all(-1).float().mean()))

    def _log_trl_keys(self, store, logp, old_logp, entropy, mask, advantages, metrics) -> None:
        """TRL's own ``entropy``, ``kl`` and ``clip_ratio/*`` keys, as GRPOTrainer computes them, so
        dashboards built on TRL keep working when the loss is ours."""
        def global_mean(x):
            totals = self.accelerator.reduce(torch.stack([(x * mask).sum(), mask.sum().float()]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        def per_sequence(x):
            return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)

        advantages = advantages.reshape(advantages.shape[0], -1)
        ratio = torch.exp(logp - old_logp)
        low = ((ratio < 1 - self.epsilon_low) & (advantages < 0)).float()
        high = ((ratio > 1 + self.epsilon_high) & (advantages > 0)).float()
        store["entropy"].append(global_mean(entropy))
        if "kl" in metrics:
            store["kl"].append(self.accelerator.gather(metrics["kl"].detach().float().reshape(1)).mean().item())
        store["clip_ratio/low_mean"].append(global_mean(low))
        store["clip_ratio/high_mean"].append(global_mean(high))
        store["clip_ratio/region_mean"].append(global_mean(torch.maximum(low, high)))
        store["clip_ratio/low_min"].append(self.accelerator.gather(per_sequence(low)).min().item())
        store["clip_ratio/high_max"].append(self.accelerator.gather(per_sequence(high)).max().item())
