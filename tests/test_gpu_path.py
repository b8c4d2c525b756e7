"""The GPU's cost model, shown on the CPU (CI has no GPU): with the GPU block policy forced on CPU
tensors, one ``token_stats`` call launches the same operators at 64 and at 1,024 tokens and never
synchronises with the host; tests marked ``gpu`` run the same code on CUDA (``make test-gpu``)."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from rlvr_explore import candidates
from rlvr_explore.candidates import token_stats, token_stats_from_hidden
from rlvr_explore.losses import batch_normalizers, policy_loss

VOCAB = 8192
HOST_SYNCS = ("aten::item", "aten::_local_scalar_dense")
# operators that only make views or read metadata: no kernel is launched for them
VIEWS = {"aten::" + name for name in ("as_strided", "slice", "narrow", "view", "reshape", "unsqueeze", "squeeze",
                                      "select", "expand", "detach", "t", "transpose", "permute", "alias", "split",
                                      "unflatten", "flatten", "promote_types", "result_type", "lift_fresh",
                                      "_unsafe_view", "unbind", "tensor_split", "chunk", "expand_as", "view_as")}


def operators_of_a_call(tokens: int, top_n: int = 3, entropy: bool = True) -> list[str]:
    """The aten operators that launch work in token_stats + CaSP's loss, forward and backward, in
    order (the trainer passes the batch's token counts, computed on the CPU, as here)."""
    g = torch.Generator().manual_seed(tokens)
    logits = torch.randn(1, tokens, VOCAB, generator=g, requires_grad=True)
    ids = torch.randint(VOCAB, (1, tokens), generator=g)
    mask = torch.ones(1, tokens)
    normalizers = batch_normalizers(mask)
    with profile(activities=[ProfilerActivity.CPU]) as trace:
        stats = token_stats(logits, ids, top_n=top_n, entropy=entropy)
        if top_n:
            loss, _ = policy_loss("casp", logp=stats.logp, old_logp=stats.logp.detach(), advantages=torch.ones(1, tokens),
                                  response_mask=mask, response_ids=ids, topn_logp=stats.topn_logp,
                                  topn_ids=stats.topn_ids, entropy=stats.entropy, rewards=torch.ones(1), **normalizers)
        else:
            loss = -(stats.logp * mask).sum()
        loss.backward()
    return [event.name for event in trace.events() if event.name.startswith("aten::") and event.name not in VIEWS]


@pytest.fixture
def gpu_policy(monkeypatch):
    monkeypatch.setattr(candidates, "CPU_BLOCK_ELEMENTS", candidates.GPU_BLOCK_ELEMENTS)


@pytest.mark.parametrize("top_n,entropy", [(3, True), (0, False)], ids=["casp", "logp-only"])
def test_operators_per_call_do_not_grow_with_tokens_under_the_gpu_policy(gpu_policy, top_n, entropy):
    short, long = operators_of_a_call(64, top_n, entropy), operators_of_a_call(1024, top_n, entropy)
    assert len(long) == len(short), (len(short), len(long))
    # the loss checks its inputs' values on the CPU only (free there; on CUDA each is a host sync)
    syncs = [name for name in long if name in HOST_SYNCS]
    assert len(syncs) == (4 if top_n else 0), syncs


def test_the_cpu_policy_blocks_by_cache_size_so_its_operators_grow_with_tokens():
    """The contrast that makes the policy matter: 4 MB blocks at V = 8,192 are 128 rows, so 1,024
    tokens are 8 blocks, each with its own operators (about 50 for CaSP's statistics)."""
    assert len(operators_of_a_call(1024)) > len(operators_of_a_call(64)) + 7 * 20


def test_block_rows_follow_the_device():
    assert candidates.block_rows(151936, torch.device("cpu")) == 6
    assert candidates.block_rows(151936, torch.device("cuda")) == 1766  # 1 GiB of float32 per block


def test_the_gpu_policy_gives_the_values_of_the_cpu_policy(monkeypatch):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 300, 32, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(VOCAB, 32, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(VOCAB, (2, 300), generator=g)

    def run():
        stats = token_stats_from_hidden(hidden, weight, ids, top_n=3, chunk_tokens=128)
        (stats.logp.sum() + stats.entropy.sum() + stats.topn_logp.sum()).backward()
        grads = hidden.grad.clone(), weight.grad.clone()
        hidden.grad = weight.grad = None
        return stats, grads

    cpu_stats, cpu_grads = run()
    monkeypatch.setattr(candidates, "CPU_BLOCK_ELEMENTS", candidates.GPU_BLOCK_ELEMENTS)
    gpu_stats, gpu_grads = run()
    for name in ("logp", "entropy", "topn_logp"):
        torch.testing.assert_close(getattr(gpu_stats, name), getattr(cpu_stats, name))
    assert torch.equal(gpu_stats.topn_ids, cpu_stats.topn_ids)
    for a, b in zip(gpu_grads, cpu_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_statistics_equal_the_cpu_ones_within_dtype_tolerance(dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 512, 151936, generator=g).to(dtype)
    ids = torch.randint(151936, (2, 512), generator=g)
    cpu_logits = logits.float().requires_grad_()
    on_cpu = token_stats(cpu_logits, ids, top_n=3)
    (on_cpu.logp.sum() + on_cpu.entropy.sum() + on_cpu.topn_logp.sum()).backward()
    cuda_logits = logits.cuda().requires_grad_()
    on_gpu = token_stats(cuda_logits, ids.cuda(), top_n=3)  # the fused kernels where Triton is installed
    (on_gpu.logp.sum() + on_gpu.entropy.sum() + on_gpu.topn_logp.sum()).backward()
    for name in ("logp", "entropy", "topn_logp"):
        torch.testing.assert_close(getattr(on_gpu, name).cpu(), getattr(on_cpu, name), atol=1e-4, rtol=1e-4)
    assert torch.equal(on_gpu.topn_ids.cpu(), on_cpu.topn_ids)
    torch.testing.assert_close(cuda_logits.grad.float().cpu(), cpu_logits.grad.to(dtype).float(), atol=1e-3, rtol=2e-2)


# ------------------------------------------------------------------ mixed precision, dtype, checkpointing


def test_statistics_use_float32_logits_under_autocast():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 16, 32, generator=g)
    weight = torch.randn(VOCAB, 32, generator=g)
    ids = torch.randint(VOCAB, (2, 16), generator=g)
    plain = token_stats_from_hidden(hidden, weight, ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = token_stats_from_hidden(hidden, weight, ids)
    assert under.logp.dtype == torch.float32
    torch.testing.assert_close(under.logp, plain.logp, rtol=0, atol=0)
    torch.testing.assert_close(under.entropy, plain.entropy, rtol=0, atol=0)


def test_bf16_mixed_precision_trains_float32_master_weights(tiny_config):
    from rlvr_explore.train.rl import RLTrainer

    trainer = RLTrainer(tiny_config("train.mixed_precision=bf16", "train.steps=2", "algorithm.entropy_coeff=0.01"))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.run()
    params = list(trainer.model.parameters())
    assert all(p.dtype == torch.float32 for p in params)
    assert any(not torch.equal(a, b) for a, b in zip(before, params)) and all(torch.isfinite(p).all() for p in params)


def test_gradient_checkpointing_changes_memory_not_the_update(tiny_config, tmp_path):
    from rlvr_explore.train.rl import RLTrainer

    weights = []
    for name, setting in (("plain", "false"), ("checkpointed", "true")):
        trainer = RLTrainer(tiny_config(f"train.gradient_checkpointing={setting}", f"run.out_dir={tmp_path / name}",
                                        "algorithm.entropy_coeff=0.01"))  # a gradient even where every reward is 0
        assert trainer.model.is_gradient_checkpointing == (setting == "true")
        initial = [p.detach().clone() for p in trainer.model.parameters()]
        trainer.train_step()
        weights.append([p.detach().clone() for p in trainer.model.parameters()])
        assert any(not torch.equal(a, b) for a, b in zip(initial, weights[-1]))
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b)


def test_model_dtype_loads_the_weights_in_that_dtype(tiny_config, tmp_path):
    from rlvr_explore.models import char_tokenizer, tiny_gpt2
    from rlvr_explore.tasks import characters
    from rlvr_explore.train.runtime import build_policy

    tokenizer = char_tokenizer(characters())
    tiny_gpt2(len(tokenizer), n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    model, _ = build_policy(tiny_config("model.dtype=bfloat16"), str(tmp_path / "m"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


# ------------------------------------------------------------------ the GPU benchmarks' parts, on the CPU


def test_a_shape_builds_that_architecture_with_random_weights():
    from rlvr_explore.bench import SHAPES, shaped_policy

    model, tokenizer = shaped_policy("qwen2.5-0.5b", layers=1)
    config = model.config
    assert config.model_type == "qwen2" and config.num_hidden_layers == 1
    assert (config.hidden_size, config.num_key_value_heads, config.vocab_size) == (896, 2, SHAPES["qwen2.5-0.5b"]["vocab_size"])
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied
    assert len(tokenizer) == config.vocab_size


def test_bench_loss_from_hidden_states_prints_ratios(capsys):
    import json

    from rlvr_explore.cli import main

    assert main(["bench", "loss", "--tokens", "8", "--vocab", "300", "--repeats", "1", "--shape", "qwen2.5-0.5b"]) == 0
    report = json.loads(capsys.readouterr().out)
    hidden = report["results"]["T=8, from hidden states of qwen2.5-0.5b"]
    assert set(hidden["cpu_ratio_to_floor"]) == {"hidden_floor", "hidden_logp", "hidden_casp_statistics"}
    assert hidden["cpu_ratio_to_floor"]["hidden_floor"] == 1.0
    if not torch.cuda.is_available():
        assert main(["bench", "loss", "--device", "cuda"]) == 2
        assert "--device cuda: no CUDA device is available" in capsys.readouterr().err


def test_every_step_of_the_gpu_script_is_a_bench_command_it_accepts():
    """benchmarks/gpu.sh runs on a short GPU lease: a flag the parser refuses would cost that lease."""
    import shlex
    from pathlib import Path

    from rlvr_explore.cli import build_parser

    script = Path(__file__).parents[1] / "benchmarks" / "gpu.sh"
    steps = [shlex.split(line)[3:] for line in script.read_text().splitlines() if line.startswith("step ")]
    assert {args[0] for args in steps} == {"loss", "rollout", "trainer"}
    for args in steps:
        parsed = build_parser().parse_args(["bench", *args, "--device", "cuda", "--out", "x.json"])
        assert parsed.which == args[0] and parsed.device == "cuda"


# ------------------------------------------------------------------ the sampler's host synchronisations


def host_reads(fn, caller: str = "") -> tuple[int, object]:
    """(how many times ``fn()`` reads a tensor's value on the host, each a synchronisation on a
    GPU, counting only reads made by a file whose path ends with ``caller``; what it returned)."""
    import sys

    reads = []
    with pytest.MonkeyPatch.context() as patch:
        for name in ("__bool__", "__int__", "__float__", "item", "tolist"):
            original = getattr(torch.Tensor, name)

            def counted(self, *args, _original=original, **kwargs):
                if sys._getframe(1).f_code.co_filename.endswith(caller):
                    reads.append(1)
                return _original(self, *args, **kwargs)

            patch.setattr(torch.Tensor, name, counted)
        result = fn()
    return len(reads), result


def host_reads_of_sampling(prompts: int, new_tokens: int) -> int:
    from rlvr_explore.bench import _tiny_policy
    from rlvr_explore.rollout import sample

    model, tokenizer = _tiny_policy(151936)  # Qwen2.5's vocabulary: statistics step by step, flat distributions
    reads, rollout = host_reads(lambda: sample(model, tokenizer, ["1 2 3>6:"] * prompts, new_tokens,
                                               generator=torch.Generator().manual_seed(0)))
    assert rollout.response_mask.all()  # no row ended early, so every position decoded every row
    return reads


def test_sampling_draws_its_uniforms_at_once_from_the_run_generator():
    from rlvr_explore.rollout import sampling_uniforms

    generator = torch.Generator().manual_seed(5)
    uniforms = sampling_uniforms(generator, 7, 3, torch.device("cpu"))
    assert uniforms.shape == (7, 3) and uniforms.dtype == torch.float64
    assert torch.equal(uniforms, torch.rand(7, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sampling_takes_one_draw_of_the_run_generator_and_repeats_from_it():
    from rlvr_explore.bench import _tiny_policy
    from rlvr_explore.rollout import sample

    model, tokenizer = _tiny_policy(151936)
    model = model.cuda()
    runs = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(0)
        runs.append(sample(model, tokenizer, ["1 2 3>6:"] * 8, 16, generator=generator))
        expected = torch.Generator().manual_seed(0)
        torch.randint(2**63 - 1, (), generator=expected)  # the device generator's seed, and nothing else
        assert torch.equal(generator.get_state(), expected.get_state())
    assert torch.equal(runs[0].response_ids, runs[1].response_ids)


def test_sampling_reads_the_host_a_few_times_per_token_whatever_the_batch(gpu_policy):
    # 16 and 24 tokens: both past the size up to which small batches defer their statistics to the end
    per_token = {prompts: (host_reads_of_sampling(prompts, 24) - host_reads_of_sampling(prompts, 16)) / 8
                 for prompts in (4, 16)}
    # one status read, two for the branching factor of flat rows, one in transformers' attention mask
    assert per_token[4] == per_token[16] <= 4, per_token


def test_an_update_reads_the_host_once_per_optimizer_step_not_per_micro_batch(tiny_config, tmp_path):
    from rlvr_explore.advantages import compute_advantages
    from rlvr_explore.train.rl import RLTrainer

    counts = {}
    for micro in (16, 2):  # one mini-batch of 16 responses: 1 or 8 micro-batches
        trainer = RLTrainer(tiny_config(f"algorithm.micro_batch_size={micro}", "algorithm.entropy_coeff=0.01",
                                        f"run.out_dir={tmp_path / str(micro)}"))
        rollout, _, rewards, groups, _ = trainer.collect()
        advantages = compute_advantages("grpo", rewards, groups, rollout.response_mask)
        # the trainer's own reads (transformers' attention mask and the loss's CPU-only input checks
        # read per forward pass as well; on CUDA the loss's checks do not run)
        counts[micro], metrics = host_reads(lambda: trainer.update(rollout, rewards, advantages), "train/rl.py")
        assert metrics["nonfinite_skipped"] == 0 and "grad_norm" in metrics
    assert counts[2] == counts[16] <= 3, counts


# ------------------------------------------------------------------ micro-batches sized by tokens


@pytest.fixture
def collected(tiny_config, tmp_path):
    """A trainer with its first rollout, rewards and GRPO advantages, for a given configuration."""
    from rlvr_explore.advantages import compute_advantages
    from rlvr_explore.train.rl import RLTrainer

    def make(*overrides):
        trainer = RLTrainer(tiny_config(*overrides, f"run.out_dir={tmp_path / str(len(overrides))}"))
        rollout, _, rewards, groups, _ = trainer.collect()
        return trainer, rollout, rewards, compute_advantages("grpo", rewards, groups, rollout.response_mask)

    return make


def test_scoring_cuts_shared_padding_without_changing_the_statistics(collected):
    from rlvr_explore.rollout import score

    trainer, rollout, _, _ = collected("rollout.max_new_tokens=12")
    rows = torch.tensor([1, 3, 5])
    cut = trainer._score(trainer.model, rollout, rows, reads={"entropy", "topn"})
    whole = score(trainer.model, rollout.prompt_ids[rows], rollout.prompt_mask[rows], rollout.response_ids[rows],
                  rollout.response_mask[rows], top_n=trainer.cfg.rollout.top_n, temperature=trainer.cfg.rollout.temperature)
    mask = rollout.response_mask[rows]
    assert mask.sum(1).max() < mask.shape[1] or rollout.prompt_mask[rows].all(0).sum() < rollout.prompt_mask.shape[1]
    for name in ("logp", "entropy", "topn_logp"):
        ours, theirs = getattr(cut, name), getattr(whole, name)
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours[mask], theirs[mask], atol=1e-5, rtol=1e-5)
    assert torch.equal(cut.topn_ids[mask], whole.topn_ids[mask])


def test_micro_batches_by_tokens_hold_every_row_once_within_the_budget(collected):
    trainer, rollout, _, _ = collected("algorithm.micro_batch_tokens=60", "algorithm.micro_batch_size=6")
    rows = torch.randperm(len(rollout.texts), generator=torch.Generator().manual_seed(0))
    parts = trainer.micro_batches(rollout, rows)
    assert sorted(torch.cat(parts).tolist()) == sorted(rows.tolist())
    assert len(parts) > 1
    for part in parts:
        padded = len(part) * (int(rollout.prompt_mask[part].sum(1).max()) + int(rollout.response_mask[part].sum(1).max()))
        assert len(part) <= 6 and (padded <= 60 or len(part) == 1), (len(part), padded)


def test_token_sized_micro_batches_give_the_update_of_response_sized_ones(collected):
    updated = []
    for overrides in ((), ("algorithm.micro_batch_tokens=50", "algorithm.micro_batch_size=4")):
        trainer, rollout, rewards, advantages = collected("algorithm.method=casp", *overrides)
        if overrides:
            assert len(trainer.micro_batches(rollout, torch.arange(len(rollout.texts)))) > 2
        trainer.update(rollout, rewards, advantages)
        updated.append(torch.cat([p.detach().flatten() for p in trainer.model.parameters()]))
    torch.testing.assert_close(updated[0], updated[1], atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ evaluation batches within a memory budget


def cache_bytes(past) -> int:
    if hasattr(past, "layers"):
        return sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
                   for layer in past.layers)
    return sum(t.numel() * t.element_size() for layer in past for t in layer)


@pytest.mark.parametrize("model_kind", ["qwen2-gqa", "gpt2"])
def test_the_kv_cache_estimate_is_the_cache_a_forward_pass_makes(model_kind):
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlvr_explore.models import tiny_gpt2
    from rlvr_explore.train.evaluate import kv_cache_bytes_per_token

    if model_kind == "gpt2":
        model = tiny_gpt2(50, n_layer=3, n_head=4, n_embd=32)
    else:  # 4 query heads share 2 key-value heads
        config = AutoConfig.for_model("qwen2", vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    batch, tokens = 3, 7
    past = model(input_ids=torch.randint(50, (batch, tokens)), use_cache=True).past_key_values
    assert cache_bytes(past) == kv_cache_bytes_per_token(model) * batch * tokens


def test_responses_that_fit_shrink_with_length_and_budget():
    from rlvr_explore.models import tiny_gpt2
    from rlvr_explore.train.evaluate import kv_cache_bytes_per_token, responses_that_fit

    model = tiny_gpt2(1000, n_layer=2, n_head=4, n_embd=64)
    per_response = kv_cache_bytes_per_token(model) * 100 + 4 * 1000 * 4
    assert responses_that_fit(model, 100, 10 * per_response) == 10
    assert responses_that_fit(model, 100, 10 * per_response - 1) == 9
    assert responses_that_fit(model, 100, 1) == 1  # never zero: one response at a time is the floor


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_sampling_batch_cut_to_the_budget_stays_inside_it():
    from rlvr_explore.bench import shaped_policy
    from rlvr_explore.rollout import sample
    from rlvr_explore.train.evaluate import responses_that_fit

    model, tokenizer = shaped_policy("qwen2.5-0.5b", layers=4, dtype=torch.bfloat16)
    model = model.cuda()
    budget = 2 * 2**30
    rows = responses_that_fit(model, 9 + 64, budget)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    sample(model, tokenizer, ["1 2 3>6:"] * rows, 64, generator=torch.Generator().manual_seed(0))
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before <= budget * 1.1, (rows, torch.cuda.max_memory_allocated() - before)
