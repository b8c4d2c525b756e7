"""DPH-RL's rehearsal term through verl (arXiv 2509.07430): the set built before training
(``rlvr-explore dph-prepare``), each step's rows sent by the driver with the batch, and the term's
forward and backward on this rank's share inside the engine's ``train_batch``."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import torch

from rlvr_explore.losses.rehearsal import DPHConfig, rehearsal_loss

from .settings import DPH_KEYS, environment_hyperparameters
from .state import STATE


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
        if STATE.actor.step != self.step:
            STATE.actor.step, STATE.actor.updates = self.step, 0
        share = self.shares[STATE.actor.updates % len(self.shares)]
        STATE.actor.updates += 1
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
    if STATE.driver.rehearsal_path != path:
        STATE.driver.rehearsal, STATE.driver.rehearsal_path = load_rehearsal_set(path), path
        if not len(STATE.driver.rehearsal["ref_logp"]):
            warnings.warn(f"DPH-RL: {path} holds no rehearsal response; training with RL alone", stacklevel=3)
    if not len(STATE.driver.rehearsal["ref_logp"]):
        return None
    actor = trainer.config.actor_rollout_ref
    mini_batches = max(1, responses // (actor.actor.ppo_mini_batch_size * actor.rollout.n))
    return draw_rehearsal_chunk(STATE.driver.rehearsal, dph, mini_batches, actor.actor.data_loader_seed, trainer.global_steps)


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
