"""The sampler's draw and its batched prompt encoding."""

import torch

from rlvr_explore.models import char_tokenizer
from rlvr_explore.rollout import draw, encode_prompts


def test_draw_follows_the_distribution_and_never_picks_a_zero():
    probs = torch.tensor([0.5, 0.0, 0.2, 0.0, 0.25, 0.05]).expand(200_000, -1)
    tokens = draw(probs, torch.rand(len(probs), generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    counts = torch.bincount(tokens, minlength=6).double()
    assert counts[1] == 0 and counts[3] == 0
    expected = probs[0].double() * len(tokens)
    sigma = (expected * (1 - probs[0].double())).sqrt()
    nonzero = expected > 0
    assert ((counts - expected).abs()[nonzero] < 5 * sigma[nonzero]).all(), (counts, expected)


def test_draw_picks_the_only_token_with_mass_even_at_the_last_id():
    probs = torch.zeros(4, 151936)
    probs[0, 0] = probs[1, 77] = probs[2, -1] = 1.0
    probs[3, -2:] = torch.tensor([0.0, 1.0])
    assert draw(probs, torch.rand(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)).tolist() == [0, 77, 151935, 151935]


def test_batched_encoding_equals_one_prompt_at_a_time():
    tokenizer = char_tokenizer("abc 123")
    prompts = ["abc", "1 2 3 abc", ""]
    ids, mask = encode_prompts(tokenizer, prompts)
    for row, prompt in enumerate(prompts):
        alone = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert ids[row][mask[row]].tolist() == alone
        assert mask[row].tolist() == [False] * (ids.shape[1] - len(alone)) + [True] * len(alone)


def test_statistics_taken_at_the_end_equal_those_taken_step_by_step(monkeypatch):
    from rlvr_explore import rollout
    from rlvr_explore.models import tiny_gpt2

    tokenizer = char_tokenizer("0123456789+-*= ")
    model = tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2, seed=3).eval()
    prompts = ["1+2=", "3*4=", "9-8=", "7=", "12+3="] * 3

    def run():
        return rollout.sample(model, tokenizer, prompts, 10, temperature=0.9, top_n=3,
                              generator=torch.Generator().manual_seed(0))

    at_end = run()
    monkeypatch.setattr(rollout, "DEFERRED_STATISTICS_ELEMENTS", 0)
    per_step = run()
    assert at_end.response_mask.any(-1).all() and not at_end.response_mask.all()  # some rows finish early
    assert torch.equal(at_end.response_ids, per_step.response_ids) and at_end.texts == per_step.texts
    assert torch.equal(at_end.response_mask, per_step.response_mask)
    for name in ("old_logp", "entropy", "topn_logp"):
        torch.testing.assert_close(getattr(at_end, name), getattr(per_step, name))
    assert torch.equal(at_end.topn_ids, per_step.topn_ids)
    assert torch.equal(at_end.branching_factor, per_step.branching_factor)


def test_nucleus_from_the_top_candidates_equals_the_sorted_nucleus():
    from rlvr_explore.rollout import _nucleus

    def sorted_nucleus(probs, top_p):
        ordered, order = probs.sort(-1, descending=True)
        ordered = ordered.masked_fill(ordered.cumsum(-1) - ordered > top_p, 0.0)
        kept = torch.zeros_like(probs).scatter(-1, order, ordered)
        return kept / kept.sum(-1, keepdim=True)

    g = torch.Generator().manual_seed(0)
    # peaked rows end their nucleus inside the top 64, flat rows need the sort
    logits = torch.randn(6, 5000, generator=g) * torch.tensor([8.0, 8.0, 4.0, 1.0, 0.1, 0.0])[:, None]
    probs = torch.softmax(logits, -1)
    for top_p in (0.3, 0.9, 0.95):
        assert torch.equal(_nucleus(probs, top_p), sorted_nucleus(probs, top_p))
