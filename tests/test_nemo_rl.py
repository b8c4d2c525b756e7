"""CONTRACT TEST of the NeMo-RL loss (nemo_rl is not installable here): NeMo-RL's documented
LossFunction protocol, data keys aligned with input_ids, and micro-batch losses that sum to the
full-batch loss given the global valid counts."""

import pytest
import torch

from rlvr_explore import losses
from rlvr_explore.candidates import token_stats
from rlvr_explore.integrations.nemo_rl import ExploreLossFn, LossInputType, LossType

B, S, V = 6, 8, 11


def data_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(V, (B, S), generator=g)
    token_mask = torch.zeros(B, S)
    token_mask[:, 3:] = 1  # the response starts at position 3
    token_mask[2, 6:] = 0
    return {
        "input_ids": input_ids,
        "advantages": torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, S).contiguous(),
        "prev_logprobs": -2.0 + 0.3 * torch.randn(B, S, generator=g, dtype=torch.float64),
        "reference_policy_logprobs": -2.0 + 0.3 * torch.randn(B, S, generator=g, dtype=torch.float64),
        "token_mask": token_mask,
        "sample_mask": torch.tensor([1, 1, 1, 0, 1, 1]),
    }


def test_protocol_attributes():
    assert ExploreLossFn("casp").input_type == LossInputType.LOGIT
    assert ExploreLossFn("casp").loss_type == LossType.SEQUENCE_LEVEL
    assert ExploreLossFn("dapo").loss_type == LossType.TOKEN_LEVEL
    with pytest.raises(ValueError, match="unknown policy loss"):
        ExploreLossFn("cassp")


@pytest.mark.parametrize("method", ["casp", "grpo_n", "dapo"])
def test_micro_batches_sum_to_the_full_batch_with_global_counts(method):
    data = data_dict(1)
    logits = torch.randn(B, S, V, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    fn = ExploreLossFn(method, kl_coef=0.05, alpha=0.2) if method == "casp" else ExploreLossFn(method, kl_coef=0.05)
    mask = data["token_mask"][:, 1:].bool() & data["sample_mask"].bool()[:, None]
    valid_toks, valid_seqs = mask.sum(), mask.any(-1).sum()
    full, _ = fn(logits, data, valid_seqs, valid_toks)
    halves = [slice(0, 3), slice(3, 6)]
    split = sum(fn(logits[h], {k: v[h] for k, v in data.items()}, valid_seqs, valid_toks)[0] for h in halves)
    torch.testing.assert_close(split, full)
    # and it is the core loss on the shifted tensors
    stats = token_stats(logits[:, :-1], data["input_ids"][:, 1:])
    hp = {"alpha": 0.2} if method == "casp" else {}
    core, _ = losses.policy_loss(method, logp=stats.logp, old_logp=data["prev_logprobs"][:, 1:],
                                 advantages=data["advantages"][:, 1:], response_mask=mask,
                                 response_ids=data["input_ids"][:, 1:], topn_logp=stats.topn_logp,
                                 topn_ids=stats.topn_ids, entropy=stats.entropy,
                                 ref_logp=data["reference_policy_logprobs"][:, 1:], kl_coef=0.05, **hp)
    torch.testing.assert_close(full, core)


def test_vocab_parallel_logits_are_refused():
    data = data_dict()
    with pytest.raises(NotImplementedError, match="full-vocabulary logits"):
        ExploreLossFn("grpo")(torch.randn(B, S, V), data, 5, 20, vocab_parallel_group=object())


def test_casp_candidates_have_one_source_its_top_n():
    """The candidates computed per token are CaSP's own N (once an argument of its own, which a
    CaSP top_n could contradict), and a loss reading none gets log-probs alone. CaSP's loss has the
    same value for any N (its auxiliary ratio equals r in value), so the gradients are compared."""
    data = data_dict(1)
    mask = data["token_mask"][:, 1:].bool() & data["sample_mask"].bool()[:, None]

    def gradient(compute):
        logits = torch.randn(B, S, V, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).requires_grad_()
        compute(logits).backward()
        return logits.grad

    def core(logits):
        stats = token_stats(logits[:, :-1], data["input_ids"][:, 1:], top_n=4)
        return losses.policy_loss("casp", logp=stats.logp, old_logp=data["prev_logprobs"][:, 1:],
                                  advantages=data["advantages"][:, 1:], response_mask=mask,
                                  response_ids=data["input_ids"][:, 1:], topn_logp=stats.topn_logp,
                                  topn_ids=stats.topn_ids, entropy=stats.entropy, top_n=4, alpha=0.5)[0]

    fn = ExploreLossFn("casp", top_n=4, alpha=0.5)
    torch.testing.assert_close(gradient(lambda logits: fn(logits, data, mask.any(-1).sum(), mask.sum())[0]),
                               gradient(core))
    assert fn.loss.top_n == 4 and ExploreLossFn("grpo").loss.top_n == 0
