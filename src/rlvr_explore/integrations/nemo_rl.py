"""NeMo-RL: ``ExploreLossFn``, a ``LossFunction`` with ``input_type = LossInputType.LOGIT``.

NeMo-RL hands a logit-input loss the full-sequence logits (B, S, V) of a micro-batch, its data
dict (``input_ids``, ``advantages``, ``prev_logprobs``, ``reference_policy_logprobs``,
``token_mask``, ``sample_mask``, aligned with ``input_ids``) and the global batch's valid
sequence and token counts, and sums the micro-batch losses. The loss here shifts the logits by
one, computes the candidate statistics with ``rlvr_explore.candidates`` and calls
``rlvr_explore.losses.policy_loss`` with those global counts, so any method, CaSP included, runs.
Vocabulary-parallel (sharded) logits are not supported. Without nemo_rl installed the enums are
stand-ins with NeMo-RL's documented values (the registry's `nemo-rl` package is an empty 0.0.0).
"""

from __future__ import annotations

import enum

import torch

from rlvr_explore import losses
from rlvr_explore.candidates import token_stats

try:
    from nemo_rl.algorithms.interfaces import LossInputType, LossType
except ImportError:
    class LossType(enum.Enum):
        TOKEN_LEVEL = "token_level"
        SEQUENCE_LEVEL = "sequence_level"

    class LossInputType(enum.Enum):
        LOGIT = "logit"
        LOGPROB = "logprob"


class ExploreLossFn:
    input_type = LossInputType.LOGIT

    def __init__(self, method: str, temperature: float = 1.0, **hyperparameters):
        """``hyperparameters``: the method's, as in the built-in trainer's ``algorithm.loss`` (CaSP's
        ``top_n`` is also the candidates computed per token)."""
        self.loss = losses.bind(method, hyperparameters)
        self.temperature = temperature
        self.loss_agg_mode = self.loss.config.loss_agg_mode
        self.loss_type = LossType.TOKEN_LEVEL if self.loss_agg_mode == "token-mean" else LossType.SEQUENCE_LEVEL

    def __call__(self, logits: torch.Tensor, data, global_valid_seqs, global_valid_toks, vocab_parallel_rank=None,
                 vocab_parallel_group=None, context_parallel_group=None):
        if vocab_parallel_group is not None or context_parallel_group is not None:
            raise NotImplementedError("ExploreLossFn needs full-vocabulary logits (no vocab or context parallelism)")
        ids = data["input_ids"][:, 1:]
        stats = token_stats(logits[:, :-1], ids, top_n=self.loss.top_n, temperature=self.temperature,
                            entropy="entropy" in self.loss.statistics)
        mask = data["token_mask"][:, 1:].bool() & data["sample_mask"].bool()[:, None]
        reference = data.get("reference_policy_logprobs")
        to_int = lambda x: None if x is None else int(x)  # noqa: E731
        loss, metrics = losses.policy_loss(
            self.loss, logp=stats.logp, old_logp=data["prev_logprobs"][:, 1:], advantages=data["advantages"][:, 1:],
            response_mask=mask, response_ids=ids, topn_logp=stats.topn_logp, topn_ids=stats.topn_ids,
            entropy=stats.entropy, ref_logp=None if reference is None else reference[:, 1:],
            num_tokens=to_int(global_valid_toks), num_seqs=to_int(global_valid_seqs))
        return loss, {key: float(value) for key, value in metrics.items()}
