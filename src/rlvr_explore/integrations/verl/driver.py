"""The driver's hooks, in both of verl's trainers: what the estimators read beyond the rewards
(old log-probs, entropy, the step, final answers), and outcome exploration's answer counts
beside verl's checkpoints."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from rlvr_explore import advantages as adv_lib

from .settings import ANSWER_KEY, ENTROPY_KEY, PREFIX, advantage_settings
from .state import ADVANTAGE_INPUTS, STATE


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
              "entropy": entropy, "step": STATE.driver.step}
    if ANSWER_KEY in data.non_tensor_batch:
        inputs["answers"] = parsed_answers(np.asarray(data.non_tensor_batch[ANSWER_KEY], dtype=object).tolist())
        inputs["prompt_ids"] = prompt_keys(data.batch["prompts"], data.batch["attention_mask"])
        inputs["answer_counts"] = STATE.driver.answer_counts
    return {key: value for key, value in inputs.items() if value is not None}


def make_compute_advantage(original):
    def compute_advantage(data, adv_estimator, *args, **kwargs):
        entropy = data.batch.pop(ENTROPY_KEY) if ENTROPY_KEY in data.batch.keys() else None  # not sent on to the actor
        if selected_estimator(adv_estimator) is None or ADVANTAGE_INPUTS.get() is not None:  # v1: set by its hook
            return original(data, adv_estimator, *args, **kwargs)
        token = ADVANTAGE_INPUTS.set(advantage_inputs(data, entropy))
        try:
            return original(data, adv_estimator, *args, **kwargs)
        finally:
            ADVANTAGE_INPUTS.reset(token)

    compute_advantage.rlvr_explore_original = original
    return compute_advantage


def make_compute_old_log_prob(original):
    def _compute_old_log_prob(self, batch):
        old_log_prob, mfu = original(self, batch)
        STATE.driver.step = self.global_steps - 1  # verl counts from 1; our step is the number of updates made (0 first)
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
    inputs = {"step": STATE.driver.step, "old_logp": padded.get("old_log_probs"), "entropy": padded.get("entropy")}
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
        inputs["answer_counts"] = STATE.driver.answer_counts
    return {key: value for key, value in inputs.items() if value is not None}


def make_v1_compute_advantage(original, trainer_module):
    """verl's v1 trainer keeps the entropy and the answers in its TransferQueue and reads only the
    rewards, masks and log-probs for the estimator: hand ours the rest, read by the batch's keys."""
    def _compute_advantage(self, batch, metrics):
        STATE.driver.step = self.global_steps - 1  # verl counts from 1; our step is the number of updates made (0 first)
        if selected_estimator(self.config.algorithm.adv_estimator) is None:
            return original(self, batch, metrics)
        data = trainer_module.tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                           select_fields=list(V1_ADVANTAGE_FIELDS))
        token = ADVANTAGE_INPUTS.set(v1_advantage_inputs(data))
        try:
            return original(self, batch, metrics)
        finally:
            ADVANTAGE_INPUTS.reset(token)

    _compute_advantage.rlvr_explore_original = original
    return _compute_advantage


def make_save_checkpoint(original):
    def _save_checkpoint(self):
        # before verl's files, so that latest_checkpointed_iteration.txt never names a folder without them
        if STATE.driver.answer_counts:
            folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
            adv_lib.save_answer_counts(folder, STATE.driver.answer_counts)
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
            STATE.driver.answer_counts = adv_lib.load_answer_counts(folder)
        return result

    _load_checkpoint.rlvr_explore_original = original
    return _load_checkpoint
