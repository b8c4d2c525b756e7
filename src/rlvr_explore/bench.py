"""``rlvr-explore bench``: the performance figures of docs/benchmarks.md, printed as JSON.

Every comparison is measured side by side in one process: the ways are interleaved (A B C A B C
...) and repeated, and each figure is the median of the repeats, in CPU seconds (all threads,
``time.process_time``) beside wall seconds. Ratios divide medians of the same run. The JSON also
names the machine, the versions and the thread count, so that figures from different machines are
never compared.

  loss     candidate statistics + policy loss, forward and backward, at a real vocabulary,
           against the floor of one log_softmax + gather; peak memory of each, in a fresh process
           (on CUDA: the allocator's peak); with --shape, also from that model's hidden states

``--device cuda`` times wall seconds with the GPU synchronised around each call; ``--shape``
builds a real model's architecture (e.g. qwen2.5-0.5b) with random weights, nothing downloaded.
  rollout  the built-in sampler against Hugging Face ``generate`` on the same tiny GPT-2, prompts
           and settings (prompts in, texts out), at the demo's vocabulary and at Qwen2.5's
           (151,936), and an evaluation batch of 1,024 samples of one problem
  trainer  one RL step of the built-in trainer against TRL's GRPOTrainer and the project's TRL
           subclass (GRPO, and CaSP) on the same tiny GPT-2, 64 completions of up to 16 tokens
           per step; beside them the model's floor: its forwards, backward and optimiser step alone
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

QWEN_VOCAB = 151936


def _environment() -> dict:
    import transformers

    info = {"machine": platform.machine(), "processor": _cpu_name(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import trl

        info["trl"] = trl.__version__
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _synchronize() -> None:
    """Wait for the GPU's queued work, so that a wall time covers it (no-op without CUDA)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn) -> tuple[float, float]:
    _synchronize()
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    _synchronize()
    return time.process_time() - cpu, time.perf_counter() - wall


def interleaved(ways: dict, repeats: int) -> dict:
    """{name: {"cpu_s": median, "wall_s": median}}, the ways run in turn ``repeats`` times."""
    samples = {name: [] for name in ways}
    for _ in range(repeats):
        for name, fn in ways.items():
            samples[name].append(_timed(fn))
    return _medians(samples)


def _medians(samples: dict) -> dict:
    """{name: [(cpu, wall), ...]} -> {name: {"cpu_s": median, "wall_s": median}}."""
    return {name: {"cpu_s": round(statistics.median(c for c, _ in s), 4),
                   "wall_s": round(statistics.median(w for _, w in s), 4)} for name, s in samples.items()}


def _ratios(times: dict, baseline: str, clock: str = "cpu_s") -> dict:
    return {name: round(t[clock] / times[baseline][clock], 3) for name, t in times.items()}


# ---------------------------------------------------------------- model shapes

# Real models' shapes, built from their configs with random weights: nothing is downloaded.
SHAPES = {
    "qwen2.5-0.5b": dict(model_type="qwen2", vocab_size=QWEN_VOCAB, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1000000.0),
    "qwen2.5-1.5b": dict(model_type="qwen2", vocab_size=QWEN_VOCAB, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1000000.0),
}


def shaped_policy(shape: str, layers: int | None = None, dtype: torch.dtype = torch.float32, seed: int = 0):
    """(model, tokenizer): a model of ``shape`` (``layers`` overrides its depth) with random
    weights, and a character tokenizer padded to its vocabulary."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlvr_explore.models import char_tokenizer
    from rlvr_explore.tasks import characters

    if shape not in SHAPES:
        raise ValueError(f"--shape {shape!r} is not known; known shapes: {', '.join(SHAPES)}")
    settings = dict(SHAPES[shape])
    if layers:
        settings["num_hidden_layers"] = layers
    tokenizer = char_tokenizer(characters(), vocab_size=settings["vocab_size"])
    config = AutoConfig.for_model(**settings, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=dtype).eval(), tokenizer


# ---------------------------------------------------------------- loss


def _loss_inputs(tokens: int, vocab: int, seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float32):
    g = torch.Generator(device).manual_seed(seed)
    logits = torch.randn(tokens, vocab, generator=g, device=device).mul_(2.0).to(dtype).requires_grad_()
    ids = torch.randint(vocab, (tokens,), generator=g, device=device)
    old_logp = -torch.rand(1, tokens, generator=g, device=device) * 5
    advantages = torch.randn(1, tokens, generator=g, device=device).sign()
    return logits, ids, old_logp, advantages


def _loss_way(name: str, logits, ids, old_logp, advantages):
    """A closure running one forward and backward of ``name``."""
    from rlvr_explore import losses
    from rlvr_explore.candidates import token_stats

    mask = torch.ones_like(old_logp, dtype=torch.bool)
    normalizers = losses.batch_normalizers(mask.cpu())  # as the trainer passes them: counted on the CPU

    def floor():
        torch.log_softmax(logits.float(), -1).gather(-1, ids[:, None]).sum().backward()

    def method(loss_name, **stat_kwargs):
        def run():
            stats = token_stats(logits[None], ids[None], **stat_kwargs)
            loss, _ = losses.policy_loss(loss_name, logp=stats.logp, old_logp=old_logp, advantages=advantages,
                                         response_mask=mask, response_ids=ids[None], topn_logp=stats.topn_logp,
                                         topn_ids=stats.topn_ids, entropy=stats.entropy, **normalizers)
            loss.backward()
        return run

    ways = {"floor": floor,
            "casp": method("casp", top_n=3),
            "grpo": method("grpo", **{"top_n": 0, "entropy": False}),
            "grpo_all_statistics": method("grpo", top_n=3)}
    fn = ways[name]

    def run():
        logits.grad = None
        fn()
    return run


def _high_water_mb() -> float:
    """This process's peak resident memory: VmHWM (ru_maxrss would carry the parent's over fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_memory_child(name, tokens, vocab, queue):
    inputs = _loss_inputs(tokens, vocab)
    run = _loss_way(name, *inputs)
    before = _high_water_mb()
    run()
    queue.put(_high_water_mb() - before)


def _peak_memory_mb(name: str, tokens: int, vocab: int) -> float:
    """Peak resident memory added by one forward and backward, in a fresh process (MB)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_memory_child, args=(name, tokens, vocab, queue))
    child.start()
    value = queue.get()
    child.join()
    return round(value, 1)


LOSS_WAYS = ("floor", "casp", "grpo", "grpo_all_statistics")


def _cuda_peak_memory_mb(run) -> float:
    """Peak GPU memory allocated by one call of ``run`` beyond what was allocated before (MB)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return round((torch.cuda.max_memory_allocated() - before) / 2**20, 1)


def _hidden_ways(tokens: int, shape: str, device: str, seed: int = 0) -> dict:
    """From final hidden states (bf16 weights of ``shape``'s lm_head): the floor ``hidden @ W.T`` +
    log_softmax + gather, against ``token_stats_from_hidden`` for log-probs alone and for CaSP's
    statistics; each a forward and backward."""
    from rlvr_explore.candidates import token_stats_from_hidden

    settings = SHAPES[shape]
    g = torch.Generator(device).manual_seed(seed)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    hidden = torch.randn(1, tokens, settings["hidden_size"], generator=g, device=device).to(dtype).requires_grad_()
    weight = (torch.randn(settings["vocab_size"], settings["hidden_size"], generator=g, device=device) * 0.02).to(dtype)
    weight.requires_grad_()
    ids = torch.randint(settings["vocab_size"], (1, tokens), generator=g, device=device)

    def floor():
        logits = (hidden @ weight.t()).float()
        torch.log_softmax(logits, -1).gather(-1, ids[..., None]).sum().backward()

    def ours(**stat_kwargs):
        def run():
            stats = token_stats_from_hidden(hidden, weight, ids, **stat_kwargs)
            (stats.logp.sum() + (stats.entropy.sum() + stats.topn_logp.sum() if stats.entropy is not None else 0)).backward()
        return run

    def clear(fn):
        def run():
            hidden.grad = weight.grad = None
            fn()
        return run

    return {name: clear(fn) for name, fn in {"hidden_floor": floor, "hidden_logp": ours(top_n=0, entropy=False),
                                             "hidden_casp_statistics": ours(top_n=3)}.items()}


def bench_loss(args) -> dict:
    device, dtype = args.device, getattr(torch, args.dtype)
    clock = "wall_s" if device == "cuda" else "cpu_s"
    results = {}
    for tokens in args.tokens:
        inputs = _loss_inputs(tokens, args.vocab, device=device, dtype=dtype)
        ways = {name: _loss_way(name, *inputs) for name in LOSS_WAYS}
        ways["floor"]()  # first touch of the gradient buffer
        times = interleaved(ways, args.repeats)
        if device == "cuda":
            memory = {name: _cuda_peak_memory_mb(way) for name, way in ways.items()}
        else:
            memory = None
        del inputs, ways
        if memory is None:
            memory = {name: _peak_memory_mb(name, tokens, args.vocab) for name in LOSS_WAYS}
        results[f"T={tokens}"] = {"times": times, f"{clock[:-2]}_ratio_to_floor": _ratios(times, "floor", clock),
                                  "peak_memory_mb": memory,
                                  "memory_ratio_to_floor": {k: round(v / memory["floor"], 3) if memory["floor"] else None
                                                            for k, v in memory.items()}}
        if args.shape:
            hidden = _hidden_ways(tokens, args.shape, device)
            hidden["hidden_floor"]()
            times = interleaved(hidden, args.repeats)
            results[f"T={tokens}, from hidden states of {args.shape}"] = {
                "times": times, f"{clock[:-2]}_ratio_to_floor": _ratios(times, "hidden_floor", clock),
                **({"peak_memory_mb": {name: _cuda_peak_memory_mb(way) for name, way in hidden.items()}}
                   if device == "cuda" else {})}
    return {"what": f"statistics + loss, forward and backward, from {args.dtype} logits on {device}", "vocab": args.vocab,
            "ways": {"floor": "torch.log_softmax + gather, backward",
                     "casp": "token_stats(top_n=3, entropy) + policy_loss('casp')",
                     "grpo": "token_stats(top_n=0, entropy=False) + policy_loss('grpo'), what the trainer runs",
                     "grpo_all_statistics": "token_stats(top_n=3, entropy) + policy_loss('grpo')"},
            "results": results}


# ---------------------------------------------------------------- rollout


def _tiny_policy(vocab: int | None, seed: int = 0):
    from rlvr_explore.models import char_tokenizer, tiny_gpt2
    from rlvr_explore.tasks import characters

    tokenizer = char_tokenizer(characters(), vocab_size=vocab)
    model = tiny_gpt2(len(tokenizer), n_layer=2, n_head=4, n_embd=64, seed=seed).eval()
    return model, tokenizer


def _bench_policy(args, vocab: int | None = None):
    """The model of a benchmark on ``args.device``: ``args.shape`` (random weights) or the tiny GPT-2."""
    if args.shape:
        model, tokenizer = shaped_policy(args.shape, args.layers, getattr(torch, args.dtype))
    else:
        model, tokenizer = _tiny_policy(vocab)
    return model.to(args.device), tokenizer


def bench_rollout(args) -> dict:
    from rlvr_explore.rollout import encode_prompts, sample
    from rlvr_explore.tasks import generate

    every = [p["prompt"] for p in generate("countdown", max(args.prompts), seed=0)]
    if args.shape:
        cases = {f"{args.shape}, {n} prompts": (None, every[:n]) for n in args.prompts}
    else:
        prompts = every[: args.prompts[0]]
        cases = {"demo vocabulary": (None, prompts), "Qwen2.5 vocabulary": (QWEN_VOCAB, prompts),
                 "evaluation, n = 1024 samples of one problem": (None, prompts[:1] * 1024)}
    clock = "wall_s" if args.device == "cuda" else "cpu_s"
    results = {}
    for case, (vocab, prompts) in cases.items():
        model, tokenizer = _bench_policy(args, vocab)
        counts = {}

        def ours():
            rollout = sample(model, tokenizer, prompts, args.new_tokens, temperature=1.0,
                             generator=torch.Generator().manual_seed(0))
            counts["ours"] = int(rollout.response_mask.sum())

        @torch.no_grad()
        def hf_generate():
            # the same work as `sample`: prompts in, texts out
            torch.manual_seed(0)
            ids, mask = encode_prompts(tokenizer, prompts)
            ids, mask = ids.to(args.device), mask.to(args.device)
            out = model.generate(input_ids=ids, attention_mask=mask.long(), do_sample=True, temperature=1.0, top_k=0,
                                 top_p=1.0, max_new_tokens=args.new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)[:, ids.shape[1]:]
            tokenizer.batch_decode(out, skip_special_tokens=True)
            finished_before = (out == tokenizer.eos_token_id).long().cumsum(-1) - (out == tokenizer.eos_token_id).long()
            counts["generate"] = int((finished_before == 0).sum())  # tokens up to and including EOS

        times = interleaved({"ours": ours, "generate": hf_generate}, args.repeats)
        rate = {name: round(counts[name] / t["cpu_s"], 1) for name, t in times.items()}
        results[case] = {
            "vocab": len(tokenizer), "sequences": len(prompts),
            "sequences_per_cpu_s": {name: round(len(prompts) / t["cpu_s"], 1) for name, t in times.items()},
            "times": times, "tokens": counts, "tokens_per_cpu_s": rate,
            "ours_vs_generate_tokens_per_cpu_s": round(rate["ours"] / rate["generate"], 3),
            "ours_vs_generate_tokens_per_wall_s": round(
                (counts["ours"] / times["ours"]["wall_s"]) / (counts["generate"] / times["generate"]["wall_s"]), 3)}
        del model
    return {"what": "sampling with KV cache, temperature 1, no top-k/top-p; ours also returns log-probs, entropy, "
                    "top-3 and the branching factor of every token", "device": args.device, "clock": clock,
            "model": (f"{args.shape}{f', {args.layers} layers' if args.layers else ''}, {args.dtype}, random weights"
                      if args.shape else "GPT-2, 2 layers, width 64, random weights"),
            "max_new_tokens": args.new_tokens, "results": results}


# ---------------------------------------------------------------- trainer


def _trl_steps(trainer_class, config_class, model_dir, tokenizer, steps, completions, group, new_tokens, out, device,
               **extra):
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    from rlvr_explore.tasks import generate
    from rlvr_explore.tasks.synthetic import verify_countdown

    class Clock(TrainerCallback):
        """CPU and wall time of each optimisation step."""

        def __init__(self):
            self.steps = []

        def on_step_begin(self, *args, **kwargs):
            self.start = (time.process_time(), time.perf_counter())

        def on_step_end(self, *args, **kwargs):
            self.steps.append((time.process_time() - self.start[0], time.perf_counter() - self.start[1]))

    def reward(prompts, completions, **kwargs):
        return [verify_countdown(p, c) for p, c in zip(prompts, completions)]

    dataset = Dataset.from_list([{"prompt": p["prompt"]} for p in generate("countdown", 512, seed=0)])
    args = config_class(output_dir=out, per_device_train_batch_size=completions, num_generations=group,
                        max_completion_length=new_tokens, max_steps=steps, logging_steps=1, report_to=[],
                        use_cpu=device == "cpu",  # on CUDA, TRL's defaults (bf16 where supported)
                        save_strategy="no", seed=0, temperature=1.0, disable_tqdm=True, **extra)
    clock = Clock()
    trainer = trainer_class(model=model_dir, reward_funcs=[reward], args=args, train_dataset=dataset,
                            processing_class=tokenizer, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # its log lines would break the JSON on standard output
    trainer.train()
    return clock.steps


def _builtin_steps(model_dir, steps, completions, group, new_tokens, out, device):
    from rlvr_explore.train.config import load_config
    from rlvr_explore.train.rl import RLTrainer

    cfg = load_config(None, [f"run.out_dir={out}", f"model.path={model_dir}", "task.name=countdown",
                             "task.train_size=512", "task.eval_size=1", f"rollout.group_size={group}",
                             f"rollout.prompts_per_step={completions // group}", f"rollout.max_new_tokens={new_tokens}",
                             "algorithm.method=grpo", f"algorithm.mini_batch_size={completions}",
                             f"algorithm.micro_batch_size={completions}", f"run.threads={torch.get_num_threads()}",
                             f"run.device={device}"])
    trainer = RLTrainer(cfg, overwrite=True)

    def step():
        trainer.train_step()
        trainer.step += 1

    times = [_timed(step) for _ in range(steps)]
    trainer.verifier.close()
    trainer._lock.close()
    return times


def _model_floor_steps(model_dir, steps, completions, group, new_tokens, device):
    """The model's own work in one step, which every trainer pays: the prompts' forward and
    ``new_tokens - 1`` cached decoding forwards of every row (no row stops early), then one
    forward and backward of prompts + responses and an AdamW step; nothing else (no sampling
    distribution, statistics, reward or bookkeeping). On CUDA under bf16 autocast, as TRL's defaults
    and the built-in trainer's."""
    from rlvr_explore.models import load_policy
    from rlvr_explore.rollout import cache_keyword_of, encode_prompts, position_ids_from_mask
    from rlvr_explore.tasks import generate

    model, tokenizer = load_policy(model_dir)
    model.to(device)
    keyword = cache_keyword_of(model)
    prompts = [p["prompt"] for p in generate("countdown", completions // group, seed=0) for _ in range(group)]
    prompt_ids, prompt_mask = (t.to(device) for t in encode_prompts(tokenizer, prompts))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def decode():
        attention = prompt_mask.long()
        out = model(input_ids=prompt_ids, attention_mask=attention, position_ids=position_ids_from_mask(prompt_mask),
                    use_cache=True, logits_to_keep=1)
        position, tokens = attention.sum(-1), [out.logits[:, -1].argmax(-1)]
        for _ in range(new_tokens - 1):
            attention = torch.cat([attention, attention.new_ones(len(prompts), 1)], 1)
            out = model(input_ids=tokens[-1][:, None], attention_mask=attention, position_ids=position[:, None],
                        use_cache=True, **{keyword: out[keyword]})
            position = position + 1
            tokens.append(out.logits[:, -1].argmax(-1))
        return torch.stack(tokens, 1)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            with torch.no_grad():
                input_ids = torch.cat([prompt_ids, decode()], 1)
            mask = torch.cat([prompt_mask, torch.ones_like(input_ids[:, prompt_ids.shape[1]:], dtype=torch.bool)], 1)
            logits = model(input_ids=input_ids, attention_mask=mask.long(), position_ids=position_ids_from_mask(mask)).logits
            logits[:, prompt_ids.shape[1] - 1:-1].float().log_softmax(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()

    return [_timed(step) for _ in range(steps)]


def bench_trainer(args) -> dict:
    from trl import GRPOConfig, GRPOTrainer

    from rlvr_explore.integrations.trl import ExploreGRPOConfig, ExploreGRPOTrainer

    model, tokenizer = _bench_policy(args)
    samples = {"builtin": [], "trl": [], "trl_subclass": [], "trl_subclass_casp": [], "model_floor": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(Path(tmp) / "model")
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        del model
        shape = dict(steps=args.steps + 1, completions=args.completions, group=args.group, new_tokens=args.new_tokens,
                     device=args.device)
        for _ in range(args.repeats):
            # the first step of each run warms up (allocations, first verifier calls) and is dropped
            samples["builtin"] += _builtin_steps(model_dir, out=str(Path(tmp) / "builtin"), **shape)[1:]
            samples["trl"] += _trl_steps(GRPOTrainer, GRPOConfig, model_dir, tokenizer, out=str(Path(tmp) / "trl"),
                                         **shape)[1:]
            samples["trl_subclass"] += _trl_steps(ExploreGRPOTrainer, ExploreGRPOConfig, model_dir, tokenizer,
                                                  out=str(Path(tmp) / "sub"), method="grpo", **shape)[1:]
            # CaSP through TRL against TRL's own GRPO: the fast statistics path's cost in TRL's loop
            samples["trl_subclass_casp"] += _trl_steps(ExploreGRPOTrainer, ExploreGRPOConfig, model_dir, tokenizer,
                                                       out=str(Path(tmp) / "casp"), method="casp", **shape)[1:]
            samples["model_floor"] += _model_floor_steps(model_dir, **shape)[1:]
    times = _medians(samples)
    clock = "wall_s" if args.device == "cuda" else "cpu_s"
    return {"what": "one GRPO step: sampling, reward, one update", "device": args.device,
            "model": (f"{args.shape}{f', {args.layers} layers' if args.layers else ''}, random weights"
                      if args.shape else "GPT-2, 2 layers, width 64"),
            "completions_per_step": args.completions, "group": args.group, "max_new_tokens": args.new_tokens,
            "steps_measured_per_way": len(samples["builtin"]), "times": times,
            f"steps_per_{clock[:-2]}_s_vs_trl": {name: round(times["trl"][clock] / t[clock], 3) for name, t in times.items()},
            # the most any trainer that runs this model through transformers can be ahead of TRL
            "model_floor_is": "the model's own forwards, backward and AdamW step of one step, nothing else"}


# ---------------------------------------------------------------- command line


def run(args) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"bench": args.which, "command": " ".join(["rlvr-explore", *sys.argv[1:]]), "environment": _environment()}
    report.update({"loss": bench_loss, "rollout": bench_rollout, "trainer": bench_trainer}[args.which](args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def add_parser(sub) -> None:
    parser = sub.add_parser("bench", help="performance figures as JSON: loss, rollout or trainer (see docs/benchmarks.md)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=("loss", "rollout", "trainer"))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per way (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the JSON here")
    parser.add_argument("--vocab", type=int, default=QWEN_VOCAB, help="loss: vocabulary size (default Qwen2.5's)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 1024, 2048], help="loss: tokens per batch")
    parser.add_argument("--prompts", type=int, nargs="+", default=[64], help="rollout: prompts per batch (with --shape, "
                                                                             "one case for each)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (cuda: wall clock, "
                                                                               "with the GPU synchronised)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="loss: the logits' dtype; rollout: the --shape model's weights")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None,
                        help="rollout, trainer: a real model's shape with random weights (nothing is downloaded); "
                             "loss: also the statistics from its hidden states")
    parser.add_argument("--layers", type=int, default=None, help="with --shape: fewer layers than the model has")
    parser.add_argument("--new-tokens", type=int, default=16, help="rollout, trainer: tokens per completion")
    parser.add_argument("--steps", type=int, default=3, help="trainer: measured steps per run (after one warm-up)")
    parser.add_argument("--completions", type=int, default=64, help="trainer: completions per step")
    parser.add_argument("--group", type=int, default=8, help="trainer: completions per prompt")
    parser.set_defaults(func=run)
