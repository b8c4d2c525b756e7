"""``rlvr-explore bench``: the performance figures of docs/benchmarks.md, printed as JSON.

Every comparison is measured side by side in one process: the ways are interleaved (A B C A B C
...) and repeated, and each figure is the median of the repeats, in CPU seconds (all threads,
``time.process_time``) beside wall seconds. Ratios divide medians of the same run. The JSON also
names the machine, the versions and the thread count, so that figures from different machines are
never compared.

  loss     candidate statistics + policy loss, forward and backward, at a real vocabulary,
           against the floor of one log_softmax + gather; peak memory of each, in a fresh process
  rollout  the built-in sampler against Hugging Face ``generate`` on the same tiny GPT-2, prompts
           and settings (prompts in, texts out), at the demo's vocabulary and at Qwen2.5's
           (151,936), and an evaluation batch of 1,024 samples of one problem
  trainer  one RL step of the built-in trainer against TRL's GRPOTrainer and the project's TRL
           subclass on the same tiny GPT-2, 64 completions of up to 16 tokens per step
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


def _timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
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


def _ratios(times: dict, baseline: str) -> dict:
    return {name: round(t["cpu_s"] / times[baseline]["cpu_s"], 3) for name, t in times.items()}


# ---------------------------------------------------------------- loss


def _loss_inputs(tokens: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(tokens, vocab, generator=g).mul_(2.0).requires_grad_()  # no temporary copy: the peak is the way's
    ids = torch.randint(vocab, (tokens,), generator=g)
    old_logp = -torch.rand(1, tokens, generator=g) * 5
    advantages = torch.randn(1, tokens, generator=g).sign()
    return logits, ids, old_logp, advantages


def _loss_way(name: str, logits, ids, old_logp, advantages):
    """A closure running one forward and backward of ``name``."""
    from rlvr_explore import losses
    from rlvr_explore.candidates import token_stats

    mask = torch.ones_like(old_logp, dtype=torch.bool)

    def floor():
        torch.log_softmax(logits, -1).gather(-1, ids[:, None]).sum().backward()

    def method(loss_name, **stat_kwargs):
        def run():
            stats = token_stats(logits[None], ids[None], **stat_kwargs)
            loss, _ = losses.policy_loss(loss_name, logp=stats.logp, old_logp=old_logp, advantages=advantages,
                                         response_mask=mask, response_ids=ids[None], topn_logp=stats.topn_logp,
                                         topn_ids=stats.topn_ids, entropy=stats.entropy)
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


def bench_loss(args) -> dict:
    results = {}
    for tokens in args.tokens:
        inputs = _loss_inputs(tokens, args.vocab)
        ways = {name: _loss_way(name, *inputs) for name in LOSS_WAYS}
        ways["floor"]()  # first touch of the gradient buffer
        times = interleaved(ways, args.repeats)
        del inputs, ways
        memory = {name: _peak_memory_mb(name, tokens, args.vocab) for name in LOSS_WAYS}
        results[f"T={tokens}"] = {"times": times, "cpu_ratio_to_floor": _ratios(times, "floor"),
                                  "peak_memory_mb": memory,
                                  "memory_ratio_to_floor": {k: round(v / memory["floor"], 3) if memory["floor"] else None
                                                            for k, v in memory.items()}}
    return {"what": "statistics + loss, forward and backward, from float32 logits", "vocab": args.vocab,
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


def bench_rollout(args) -> dict:
    from rlvr_explore.rollout import encode_prompts, sample
    from rlvr_explore.tasks import generate

    prompts = [p["prompt"] for p in generate("countdown", args.prompts, seed=0)]
    cases = {"demo vocabulary": (None, prompts), "Qwen2.5 vocabulary": (QWEN_VOCAB, prompts),
             "evaluation, n = 1024 samples of one problem": (None, prompts[:1] * 1024)}
    results = {}
    for case, (vocab, prompts) in cases.items():
        model, tokenizer = _tiny_policy(vocab)
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
    return {"what": "sampling with KV cache, temperature 1, no top-k/top-p; ours also returns log-probs, entropy, "
                    "top-3 and the branching factor of every token",
            "model": "GPT-2, 2 layers, width 64, random weights",
            "max_new_tokens": args.new_tokens, "results": results}


# ---------------------------------------------------------------- trainer


def _trl_steps(trainer_class, config_class, model_dir, tokenizer, steps, completions, group, new_tokens, out, **extra):
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
                        max_completion_length=new_tokens, max_steps=steps, logging_steps=1, report_to=[], use_cpu=True,
                        save_strategy="no", seed=0, temperature=1.0, disable_tqdm=True, **extra)
    clock = Clock()
    trainer = trainer_class(model=model_dir, reward_funcs=[reward], args=args, train_dataset=dataset,
                            processing_class=tokenizer, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # its log lines would break the JSON on standard output
    trainer.train()
    return clock.steps


def _builtin_steps(model_dir, steps, completions, group, new_tokens, out):
    from rlvr_explore.train.config import load_config
    from rlvr_explore.train.rl import RLTrainer

    cfg = load_config(None, [f"run.out_dir={out}", f"model.path={model_dir}", "task.name=countdown",
                             "task.train_size=512", "task.eval_size=1", f"rollout.group_size={group}",
                             f"rollout.prompts_per_step={completions // group}", f"rollout.max_new_tokens={new_tokens}",
                             "algorithm.method=grpo", f"algorithm.mini_batch_size={completions}",
                             f"algorithm.micro_batch_size={completions}", f"run.threads={torch.get_num_threads()}"])
    trainer = RLTrainer(cfg, overwrite=True)

    def step():
        trainer.train_step()
        trainer.step += 1

    times = [_timed(step) for _ in range(steps)]
    trainer.verifier.close()
    trainer._lock.close()
    return times


def bench_trainer(args) -> dict:
    from trl import GRPOConfig, GRPOTrainer

    from rlvr_explore.integrations.trl import ExploreGRPOConfig, ExploreGRPOTrainer

    model, tokenizer = _tiny_policy(None)
    samples = {"builtin": [], "trl": [], "trl_subclass": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(Path(tmp) / "model")
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        shape = dict(steps=args.steps + 1, completions=args.completions, group=args.group, new_tokens=args.new_tokens)
        for _ in range(args.repeats):
            # the first step of each run warms up (allocations, first verifier calls) and is dropped
            samples["builtin"] += _builtin_steps(model_dir, out=str(Path(tmp) / "builtin"), **shape)[1:]
            samples["trl"] += _trl_steps(GRPOTrainer, GRPOConfig, model_dir, tokenizer, out=str(Path(tmp) / "trl"),
                                         **shape)[1:]
            samples["trl_subclass"] += _trl_steps(ExploreGRPOTrainer, ExploreGRPOConfig, model_dir, tokenizer,
                                                  out=str(Path(tmp) / "sub"), method="grpo", **shape)[1:]
    times = _medians(samples)
    return {"what": "one GRPO step: sampling, reward, one update", "model": "GPT-2, 2 layers, width 64",
            "completions_per_step": args.completions, "group": args.group, "max_new_tokens": args.new_tokens,
            "steps_measured_per_way": len(samples["builtin"]), "times": times,
            "steps_per_cpu_s_vs_trl": {name: round(times["trl"]["cpu_s"] / t["cpu_s"], 3) for name, t in times.items()}}


# ---------------------------------------------------------------- command line


def run(args) -> int:
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
    parser.add_argument("--prompts", type=int, default=64, help="rollout: prompts per batch")
    parser.add_argument("--new-tokens", type=int, default=16, help="rollout, trainer: tokens per completion")
    parser.add_argument("--steps", type=int, default=3, help="trainer: measured steps per run (after one warm-up)")
    parser.add_argument("--completions", type=int, default=64, help="trainer: completions per step")
    parser.add_argument("--group", type=int, default=8, help="trainer: completions per prompt")
    parser.set_defaults(func=run)
