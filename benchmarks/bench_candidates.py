"""Candidate statistics: our single pass against the straightforward ways, in one run.

For each way: forward+backward wall time (median of repeats) and the bytes of new storage that
autograd keeps for backward (counted with saved-tensor hooks, references to the inputs excluded:
exact and deterministic, unlike RSS on a CPU).

  naive        log_softmax over (B, T, V) kept for backward, then gather, entropy, topk
  n_copies     the official SimKO code's way: the log-softmax is materialised once per rank n
  ours_logits  rlvr_explore.candidates.token_stats (chunks, one logsumexp, checkpointed)
  naive_hidden logits = hidden @ W.T for the whole batch, then naive
  ours_hidden  token_stats_from_hidden (logits built per chunk inside the checkpoint)

With verl installed, two more rows price the verl plugin's model-output hook on the same logits:
  verl_entropy verl's own log-probs and entropy (logprobs_from_logits, entropy_from_logits)
  verl_hook    verl's log-probs plus the hook's entropy and top-N (integrations.verl.candidate_columns)

Usage: python benchmarks/bench_candidates.py [--tokens 2048] [--vocab 32000] [--dim 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rlvr_explore.candidates import token_stats, token_stats_from_hidden

N = 3


def naive(logits, ids):
    logp_all = torch.log_softmax(logits.float(), -1)
    logp = logp_all.gather(-1, ids[..., None])[..., 0]
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    topn = logp_all.topk(N, -1).values
    return logp, entropy, topn


def n_copies(logits, ids):
    top_ids = logits.topk(N, -1).indices
    logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None])[..., 0]
    entropy_logp = torch.log_softmax(logits.float(), -1)
    entropy = -(entropy_logp.exp() * entropy_logp).sum(-1)
    topn = torch.cat([torch.log_softmax(logits.float(), -1).gather(-1, top_ids[..., n : n + 1]) for n in range(N)], -1)
    return logp, entropy, topn


def ours(logits, ids):
    s = token_stats(logits, ids, top_n=N)
    return s.logp, s.entropy, s.topn_logp


def measure(fn, inputs, repeats):
    saved = []
    own = {x.untyped_storage().data_ptr() for x in inputs}

    def pack(t):
        # count new storage only: a reference to an input (the logits, the lm_head) costs nothing
        if t.untyped_storage().data_ptr() not in own:
            saved.append(t.numel() * t.element_size())
        return t

    times = []
    for r in range(repeats):
        for x in inputs:
            if x.is_floating_point():
                x.grad = None
        saved.clear()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logp, entropy, topn = fn()
        (logp.sum() + entropy.sum() + topn.sum()).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times), sum(saved)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    T, V, d = args.tokens, args.vocab, args.dim
    logits = torch.randn(1, T, V, requires_grad=True)
    hidden = torch.randn(1, T, d, requires_grad=True)
    weight = (torch.randn(V, d) / d**0.5).requires_grad_()
    ids = torch.randint(V, (1, T))
    cases = {
        "naive": (lambda: naive(logits, ids), [logits]),
        "n_copies": (lambda: n_copies(logits, ids), [logits]),
        "ours_logits": (lambda: ours(logits, ids), [logits]),
        "naive_hidden": (lambda: naive(hidden @ weight.t(), ids), [hidden, weight]),
        "ours_hidden": (lambda: (lambda s: (s.logp, s.entropy, s.topn_logp))(token_stats_from_hidden(hidden, weight, ids, top_n=N)),
                        [hidden, weight]),
    }
    try:
        from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits

        from rlvr_explore.integrations.verl import candidate_columns
    except ImportError:
        pass
    else:
        def hook(logits, ids):
            columns = candidate_columns(logits, top_n=N)
            topn = torch.stack([columns[f"rlvr_top{n}_logp"] for n in range(1, N + 1)], -1)
            return logprobs_from_logits(logits[0], ids[0]), columns["rlvr_entropy"], topn

        cases["verl_entropy"] = (lambda: (logprobs_from_logits(logits[0], ids[0]), entropy_from_logits(logits[0]),
                                          logits.new_zeros(1)), [logits])
        cases["verl_hook"] = (lambda: hook(logits, ids), [logits])
    print(f"tokens {T}, vocab {V}, hidden {d}, top-N {N}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'way':<14}{'fwd+bwd s':>11}{'saved MB':>11}{'time vs naive':>15}{'memory vs naive':>17}")
    results = {name: measure(fn, inputs, args.repeats) for name, (fn, inputs) in cases.items()}
    for name, (seconds, saved) in results.items():
        base = results["naive_hidden" if "hidden" in name else "naive"]
        print(f"{name:<14}{seconds:>11.3f}{saved / 2**20:>11.1f}{seconds / base[0]:>15.2f}{saved / base[1]:>17.3f}")


if __name__ == "__main__":
    main()
