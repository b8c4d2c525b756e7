"""Config validation with clear errors, the packaged configs, models and the rollout."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlvr_explore.models import char_tokenizer, load_policy, tiny_gpt2
from rlvr_explore.rollout import _nucleus, sample, score
from rlvr_explore.tasks import characters
from rlvr_explore.train.config import PACKAGED, ConfigError, load_config


@pytest.mark.parametrize("text,match", [
    ("rollout:\n  group_size: 4\n  grup: 3\n", r"bad.yaml, line 3: unknown key 'rollout.grup'"),
    ("rollout:\n  group_size: four\n", r"bad.yaml, line 2: 'rollout.group_size' expects int, got 'four'"),
    ("rollout: [1\n", r"bad.yaml, line 2: not valid YAML"),
    ("- a\n", "the top level must be a mapping"),
    ("algorithm:\n  method: cassp\n", "algorithm.method 'cassp' is not a registered loss; available: casp"),
    ("rollout:\n  group_size: 1\n", "group_size must be >= 2"),
])
def test_config_errors_name_file_line_and_key(tmp_path, text, match):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(tmp_path / "bad.yaml")


def test_overrides_and_yaml_exponents(tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-6\nalgorithm:\n  method: casp\n")
    cfg = load_config(tmp_path / "c.yaml", ["algorithm.loss={alpha: 0.05}", "rollout.group_size=16"])
    assert cfg.optim.lr == 1e-6 and cfg.algorithm.method == "casp"
    assert cfg.algorithm.loss == {"alpha": 0.05} and cfg.rollout.group_size == 16
    with pytest.raises(ConfigError, match="override 'rollout.gsize=3': unknown key 'rollout.gsize'"):
        load_config(None, ["rollout.gsize=3"])
    with pytest.raises(FileNotFoundError, match="packaged configs: .*casp"):
        load_config("nonexistent")


COMPARISONS = ("demo", "explore", "dph_compare", "unlikeliness_compare")  # comparison files: a shared config and named runs


@pytest.mark.parametrize("name", sorted(p.stem for p in PACKAGED.glob("*.yaml") if p.stem not in COMPARISONS))
def test_every_packaged_config_is_valid(name):
    cfg = load_config(name)
    from rlvr_explore import losses

    spec = losses.get_method(cfg.algorithm.method)
    losses.bind(spec, cfg.algorithm.loss)


@pytest.mark.parametrize("name", COMPARISONS)
def test_every_run_of_a_packaged_comparison_is_valid(name, tmp_path):
    from rlvr_explore.compare import _run_config, load_comparison

    base, runs, _ = load_comparison(name)
    first = next(iter(runs))  # the first run is the baseline of every verdict: a GRPO run
    assert runs[first]["algorithm"]["method"] == "grpo" and "advantage" not in runs[first]["algorithm"]
    for run, overrides in runs.items():
        _run_config(base, 0, tmp_path, run, overrides)


def test_char_tokenizer_round_trip_and_save_load(tmp_path):
    tokenizer = char_tokenizer(characters())
    text = "12 3>15:ab|cd"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tokenizer.decode(ids) == text
    model = tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2)
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    loaded, loaded_tok = load_policy(tmp_path / "m")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    x = torch.tensor([ids])
    assert torch.allclose(loaded(x).logits, model(x).logits) and torch.allclose(plain(x).logits, model(x).logits)
    assert loaded_tok.decode(ids) == text
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_policy(tmp_path / "gpt2")


def test_kv_cached_sampling_matches_teacher_forced_scores():
    tokenizer = char_tokenizer(characters())
    model = tiny_gpt2(len(tokenizer), n_layer=2, n_embd=32, n_head=2).eval()
    prompts = ["2 4 8>20:", "ab|c:", "1>1:"] * 4
    rollout = sample(model, tokenizer, prompts, max_new_tokens=7, temperature=0.8, top_n=3,
                     generator=torch.Generator().manual_seed(0))
    mask = rollout.response_mask
    assert mask[:, 0].all() and (mask.sum(1) >= 1).all()
    with torch.no_grad():
        stats = score(model, rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids, mask, top_n=3, temperature=0.8)
    torch.testing.assert_close(stats.logp[mask], rollout.old_logp[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.entropy[mask], rollout.entropy[mask], atol=1e-5, rtol=1e-5)
    assert torch.equal(stats.topn_ids[mask], rollout.topn_ids[mask])
    eos = tokenizer.eos_token_id
    for ids, m in zip(rollout.response_ids, mask):
        ended = (ids[m] == eos).nonzero()
        if len(ended):  # nothing valid after the EOS
            assert ended[0, 0] == m.sum() - 1


def test_greedy_is_deterministic_and_nucleus_truncates():
    tokenizer = char_tokenizer(characters())
    model = tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2).eval()
    a = sample(model, tokenizer, ["1 2>3:"] * 3, max_new_tokens=5, greedy=True)
    assert len(set(a.texts)) == 1
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert torch.allclose(_nucleus(probs, 0.7), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert torch.allclose(_nucleus(probs, 0.85), torch.tensor([[0.5, 0.3, 0.15, 0.0]]) / 0.95)


def test_a_saved_tiny_policy_works_with_plain_transformers_code(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr_explore.models import char_tokenizer, tiny_gpt2
    from rlvr_explore.rollout import encode_prompts

    tokenizer = char_tokenizer("0123456789+-*>: ")
    tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path / "p")
    tokenizer.save_pretrained(tmp_path / "p")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "p")
    plain = loaded("2 4>6:")["input_ids"]
    ours, _ = encode_prompts(loaded, ["2 4>6:"])
    assert plain[0] == loaded.bos_token_id and plain == ours[0].tolist()  # the BOS the trainer puts first
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "p")
    out = model.generate(**loaded("2 4>6:", return_tensors="pt"), max_new_tokens=3, do_sample=False,
                         pad_token_id=loaded.pad_token_id)
    assert out.shape == (1, len(plain) + 3)
