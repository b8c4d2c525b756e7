"""The workers' hooks on verl's FSDP engine: the model-output hook (entropy and top-N from the
logits, through the engine's logits-processor seam), the replacement ``ppo_loss`` that hands them
to the registered loss, the batch-wide gate over every data-parallel rank, and the rehearsal
term's place in ``train_batch``."""

from __future__ import annotations

from functools import partial

import torch
import torch.distributed as dist

from rlvr_explore import losses
from rlvr_explore.candidates import token_stats

from .rehearsal import REHEARSAL_KEY, rehearsal_batch, verl_rehearsal_loss
from .settings import GATE_KEY, PREFIX, StatisticsRequest, statistics_needed
from .state import MICRO_BATCH_STATISTICS


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


def make_prepare_model_outputs(original, tensordict_utils):
    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        needed = statistics_needed(_loss_config(logits_processor_func))
        if needed is None or not needed.candidates:  # KL-Cov and Clip-Cov need log-probs only
            return original(self, output, output_args, micro_batch, logits_processor_func)
        method, bound, _, _ = needed
        get = partial(tensordict_utils.get_non_tensor_data, data=micro_batch)
        if get(key="use_fused_kernels", default=False):
            raise ValueError(f"loss_mode {PREFIX}{method} needs the logits: set actor_rollout_ref.model.use_fused_kernels=False")
        if get(key="distillation_use_topk", default=False):
            raise ValueError(f"loss_mode {PREFIX}{method} cannot be combined with top-k distillation (both use the logits processor)")
        tensordict_utils.assign_non_tensor(micro_batch, distillation_use_topk=True)
        try:
            return original(self, output, output_args, micro_batch, partial(candidate_columns, top_n=max(bound.top_n, 1)))
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
        token = MICRO_BATCH_STATISTICS.set(padded_statistics(model_output, data, no_padding_2_padding, needed.candidates))
        try:
            return verl_ppo_loss(config, model_output, data, dp_group)
        finally:
            MICRO_BATCH_STATISTICS.reset(token)

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
    _, bound, candidates, _ = needed
    model_output = engine.infer_batch(data, loss_function=partial(_statistics_only, config=config))["model_output"]
    padded = data.select("response_mask", "old_log_probs", "advantages").to_padded_tensor()
    tensors = {"logp": no_padding_2_padding(model_output["log_probs"], data), "old_logp": padded["old_log_probs"],
               "advantages": padded["advantages"], "response_mask": padded["response_mask"].bool(),
               **padded_statistics(model_output, data, no_padding_2_padding, candidates)}
    everyone, mine = gather_rows(tensors, engine.get_data_parallel_group())
    gate = losses.token_gate(bound, **everyone)[mine]
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
