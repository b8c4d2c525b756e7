"""The RL loop (docs/architecture.md): prompts -> rollout -> verifier -> advantages -> PPO epochs over
mini-batches (micro-batches accumulate) -> optimizer; SPS IRL phases, DAPO dynamic sampling,
KL reference and its ProRL reset, evaluation, checkpoints and ``--resume``.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from rlvr_explore import advantages as adv_lib
from rlvr_explore import losses, metrics
from rlvr_explore.losses.rehearsal import rehearsal_loss
from rlvr_explore.recipe import Recipe, recipes
from rlvr_explore.rollout import NonFiniteError, Rollout, sample, score

from . import rehearsal as rehearsal_data
from .config import Config, describe_changes, saved_config_changes, to_dict
from .evaluate import evaluate_and_record
from .checkpoints import (
    RunDirectoryError, assert_savable, list_checkpoints, lock_run_dir, mark_finished, nonfinite_tensors, plan_run,
    save_checkpoint,
)
from .runtime import (
    Progress, RunLogger, build_policy, load_tasks, make_schedule, make_verifier, mixed_precision, outcome_answer,
    resolve_device, restore_rng, rng_state, save_policy, seed_everything,
)
from .sft import nll_loss


DRAWS_STRIDE = 1_000_003  # run.draws moves the seed of the random draws this far: no other seed's stream


class RLTrainer:
    """One RL run in ``run.out_dir``. ``resume`` continues from the newest intact checkpoint;
    ``overwrite`` replaces a run already there (otherwise refused). Every refusal comes before
    anything in the directory is changed."""

    def __init__(self, cfg: Config, resume: bool = False, init_policy: str | None = None, overwrite: bool = False,
                 accept_changes: bool = False, evaluate_start: bool = True):
        self.cfg = cfg
        self.evaluate_start = evaluate_start  # False where the initial policy's evaluation exists elsewhere
        self.out = Path(cfg.run.out_dir)
        self._lock = lock_run_dir(self.out, "rl")
        try:
            self._start(resume, init_policy, overwrite, accept_changes)
        except BaseException:
            self._lock.close()  # a refused start leaves the directory to the next attempt
            raise

    def _start(self, resume, init_policy, overwrite, accept_changes) -> None:
        cfg = self.cfg
        plan = plan_run(self.out, "rl", cfg.train.steps, resume, overwrite)
        changes = self._changes_from_saved_config() if plan.resume_from else {}
        if changes and not accept_changes:
            raise RunDirectoryError(f"--resume: the settings differ from the run's own ({self.out / 'config.json'}): "
                                    f"{describe_changes(changes)}. "
                                    "Resume with the run's settings (drop those overrides), or pass --accept-changes to "
                                    "continue with these (they are recorded in config_history.jsonl)")
        draws_seed = cfg.run.seed + DRAWS_STRIDE * cfg.run.draws
        seed_everything(draws_seed)
        self.device = resolve_device(cfg)
        self.recipes = recipes(cfg.algorithm)  # the method's (and a warm-up method's), bound once
        if init_policy is None and plan.owner is not None:  # a restart from step 0 starts where the run started
            init_policy = plan.owner.get("init")
        start_from = str(plan.resume_from) if plan.resume_from else init_policy
        self.model, self.tokenizer = build_policy(cfg, start_from)
        self.model.to(self.device)
        self.train_problems, self.eval_problems = load_tasks(cfg, self.tokenizer, self.model)
        self.verifier = make_verifier(cfg)
        self.generator = torch.Generator().manual_seed(draws_seed)
        self.optimizer = self._new_optimizer()
        self.scheduler = make_schedule(self.optimizer, cfg, cfg.train.steps * self._updates_per_step())
        self.reference = self._frozen_copy() if cfg.algorithm.kl_coef > 0 else None
        self.step = 0
        self.nonfinite_streak = 0  # updates skipped in a row for a NaN/inf loss or gradient
        self.answer_counts: dict = {}  # (prompt, answer) -> times seen, for the outcome exploration bonus
        if plan.resume_from:
            state_path = plan.resume_from / "trainer_state.pt"
            try:
                self._restore(torch.load(state_path, weights_only=False))
            except Exception as error:  # the manifest held, so this is a version mismatch, not damage
                raise RunDirectoryError(f"{state_path}: cannot be restored ({type(error).__name__}: {error})") from None
        plan.apply(init=init_policy)
        if plan.resume_from:
            print(f"resumed {self.out} from its checkpoint at step {self.step} of {cfg.train.steps} "
                  f"({plan.resume_from})", flush=True)
        self.logger = RunLogger(self.out, resume_step=self.step if plan.resume_from else None)
        if changes:
            with (self.out / "config_history.jsonl").open("a") as history:
                history.write(json.dumps({"time": round(time.time(), 3), "resumed_at_step": self.step,
                                          "changes": {k: {"from": a, "to": b} for k, (a, b) in changes.items()}}) + "\n")
        (self.out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        self.rehearsal = self._dph_data(plan.resume_from is not None) if cfg.dph.enabled else None

    def _dph_data(self, resumed: bool) -> Rollout | None:
        """DPH-RL: RL trains on the prompts pi_0 does not always solve; the rehearsal set of the others."""
        data = rehearsal_data.load_or_build(self.out, resumed, self.model, self.tokenizer, self.train_problems,
                                            self.verifier, self.cfg, self.generator)
        keep = set(data["rl_prompts"])
        self.train_problems = [p for p in self.train_problems if p["prompt"] in keep]
        if not self.train_problems:
            raise ValueError(f"DPH-RL: pi_0 solves every training prompt in all its dph.presample="
                             f"{self.cfg.dph.presample} samples; no prompt is left for RL")
        if not resumed:
            self.logger.log({"kind": "dph", "step": 0, **data["stats"]})
        return data["rehearsal"]

    def _changes_from_saved_config(self) -> dict:
        saved = self.out / "config.json"
        try:
            return saved_config_changes(saved, self.cfg)
        except (OSError, ValueError) as error:
            raise RunDirectoryError(f"--resume: {saved} is missing or unreadable ({error}); the run's settings are unknown") from None

    # ---------------------------------------------------------------- setup helpers

    def _new_optimizer(self):
        o = self.cfg.optim
        return torch.optim.AdamW(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)

    def _frozen_copy(self):
        reference = copy.deepcopy(self.model).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
        return reference

    def _updates_per_step(self) -> int:
        a, r = self.cfg.algorithm, self.cfg.rollout
        return a.ppo_epochs * math.ceil(r.prompts_per_step * r.group_size / a.mini_batch_size)

    def _state(self) -> dict:
        return {"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(self.generator), "verifier_stats": dict(self.verifier.stats),
                "nonfinite_streak": self.nonfinite_streak, "answer_counts": dict(self.answer_counts),
                "reference": self.reference.state_dict() if self.reference is not None else None}

    def _restore(self, state: dict) -> None:
        self.step = state["step"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], self.generator)
        self.verifier.stats.update(state["verifier_stats"])
        self.nonfinite_streak = state.get("nonfinite_streak", 0)
        self.answer_counts = state.get("answer_counts", {})
        if self.reference is not None and state["reference"] is not None:
            self.reference.load_state_dict(state["reference"])

    def recipe(self) -> Recipe:
        """The recipe of this step: the warm-up method's for the first ``warmup_method_steps``."""
        a = self.cfg.algorithm
        return self.recipes[a.warmup_method if a.warmup_method and self.step < a.warmup_method_steps else a.method]

    # ---------------------------------------------------------------- one RL step

    def _sample_groups(self, n_prompts: int):
        r = self.cfg.rollout
        problems = random.sample(self.train_problems, min(n_prompts, len(self.train_problems)))
        repeated = [p for p in problems for _ in range(r.group_size)]
        self.model.eval()
        with mixed_precision(self.cfg, self.device):
            rollout = sample(self.model, self.tokenizer, [p["prompt"] for p in repeated], r.max_new_tokens,
                             temperature=r.temperature, top_p=r.top_p, top_n=r.top_n, generator=self.generator)
        rewards = torch.tensor(self.verifier(repeated, rollout.texts), dtype=torch.float32)
        group_ids = torch.arange(len(problems)).repeat_interleave(r.group_size)
        return rollout, repeated, rewards, group_ids

    def collect(self):
        """One batch of groups; with DAPO dynamic sampling, only informative groups, refilled."""
        a, r = self.cfg.algorithm, self.cfg.rollout
        rollout, problems, rewards, group_ids = self._sample_groups(r.prompts_per_step)
        stats = {"zero_variance_groups": float(1 - adv_lib.informative_groups(rewards, group_ids).float().mean())}
        if not a.dynamic_sampling:
            return rollout, problems, rewards, group_ids, stats
        parts, offset = [], 0
        for round_ in range(1 + a.max_resample):
            if round_:
                rollout, problems, rewards, group_ids = self._sample_groups(r.prompts_per_step)
            keep = adv_lib.informative_groups(rewards, group_ids).nonzero().squeeze(-1)
            parts.append((rollout.select(keep), [problems[i] for i in keep.tolist()], rewards[keep], group_ids[keep] + offset))
            offset += r.prompts_per_step
            if sum(len(p[1]) for p in parts) >= r.prompts_per_step * r.group_size:
                break
        stats["sampling_rounds"] = round_ + 1
        kept = [p for p in parts if p[1]]
        if not kept:
            return None, [], None, None, stats
        rollout = Rollout.concat([p[0] for p in kept])
        limit = r.prompts_per_step * r.group_size
        return (rollout.select(range(min(limit, len(rollout.texts)))), [x for p in kept for x in p[1]][:limit],
                torch.cat([p[2] for p in kept])[:limit], torch.cat([p[3] for p in kept])[:limit], stats)

    def _score(self, model, rollout: Rollout, rows: torch.Tensor, reads=frozenset()):
        """Log-probs of the rows under ``model``, and the statistics in ``reads`` (entropy, topn).

        Only the rows' own extent is computed: the columns that are padding in all of them (prompts
        are left-padded, responses right-padded) are cut, and the statistics padded back with zeros
        to the rollout's width."""
        r = self.cfg.rollout
        prompt_mask, response_mask = rollout.prompt_mask[rows], rollout.response_mask[rows]
        # the rollout lives on the host: numpy reads it without a device synchronisation
        first = prompt_mask.shape[1] - int(prompt_mask.numpy().sum(1).max())
        width = max(1, int(response_mask.numpy().sum(1).max()))
        with mixed_precision(self.cfg, self.device):  # the forward pass only: backward follows its dtypes
            stats = score(model, rollout.prompt_ids[rows, first:], prompt_mask[:, first:],
                          rollout.response_ids[rows, :width], response_mask[:, :width],
                          top_n=r.top_n if "topn" in reads else 0, temperature=r.temperature, entropy="entropy" in reads)
        return stats.padded_to(response_mask.shape[1])

    def micro_batches(self, rollout: Rollout, rows: torch.Tensor) -> list[torch.Tensor]:
        """``rows`` in micro-batches of at most ``algorithm.micro_batch_size`` responses and, when
        ``algorithm.micro_batch_tokens`` is set, at most that many padded tokens (the rows times
        their longest prompt plus their longest response, the extent ``_score`` computes): rows in
        order of length, so that the short ones share a pass; a longer row than the budget goes alone."""
        a = self.cfg.algorithm
        if not a.micro_batch_tokens:
            return list(rows.split(a.micro_batch_size))
        indices = rows.numpy()  # host data, read without a device synchronisation
        prompt_lengths = rollout.prompt_mask.numpy()[indices].sum(1)
        response_lengths = rollout.response_mask.numpy()[indices].sum(1)
        order = np.argsort(-(prompt_lengths + response_lengths), kind="stable")
        parts, current, longest_prompt, longest_response = [], [], 0, 0
        for i, p, t in zip(order, prompt_lengths[order], response_lengths[order]):
            tokens = (len(current) + 1) * (max(longest_prompt, p) + max(longest_response, t))
            if current and (len(current) == a.micro_batch_size or tokens > a.micro_batch_tokens):
                parts.append(rows[torch.as_tensor(current)])
                current, longest_prompt, longest_response = [], 0, 0
            current.append(i)
            longest_prompt, longest_response = max(longest_prompt, p), max(longest_response, t)
        return parts + [rows[torch.as_tensor(current)]]

    def update(self, rollout: Rollout, rewards: torch.Tensor, advantages: torch.Tensor) -> dict:
        a = self.cfg.algorithm
        bound = self.recipe().loss
        reads = bound.statistics
        dev = self.device
        mask = rollout.response_mask
        ref_logp = None
        if self.reference is not None:
            with torch.no_grad():
                ref_logp = torch.zeros(mask.shape)
                for rows in self.micro_batches(rollout, torch.arange(len(mask))):
                    ref_logp[rows] = self._score(self.reference, rollout, rows).logp.cpu()
        # metrics and finiteness stay tensors until the optimizer step: a value read on the host per
        # micro-batch would make a GPU wait for its queue each time
        collected: dict[str, list[torch.Tensor]] = {}
        finite, skipped = torch.ones((), dtype=torch.bool, device=dev), 0
        rehearsed = None if self.rehearsal is None else torch.randperm(
            len(self.rehearsal.texts), generator=self.generator)[: self.cfg.dph.chunk]
        self.model.train()
        for _ in range(a.ppo_epochs):
            order = torch.randperm(len(mask), generator=self.generator)
            minis = order.split(a.mini_batch_size)
            shares = rehearsed.tensor_split(len(minis)) if rehearsed is not None else [None] * len(minis)
            for mini, share in zip(minis, shares):
                norm = losses.batch_normalizers(mask[mini])
                micros = self.micro_batches(rollout, mini)
                mini = torch.cat(micros)  # the gate below is laid out in the micro-batches' order
                gate = self._batch_gate(bound, reads, rollout, micros, rewards, advantages) if (
                    len(micros) > 1 and bound.batch_wide_gate) else None
                start = 0
                for rows in micros:
                    stats = self._score(self.model, rollout, rows, reads)
                    loss, m = losses.policy_loss(
                        bound, logp=stats.logp, old_logp=rollout.old_logp[rows].to(dev),
                        advantages=advantages[rows].to(dev), response_mask=mask[rows].to(dev),
                        response_ids=rollout.response_ids[rows].to(dev), topn_logp=stats.topn_logp,
                        topn_ids=stats.topn_ids, entropy=stats.entropy, rewards=rewards[rows].to(dev),
                        ref_logp=None if ref_logp is None else ref_logp[rows].to(dev),
                        token_gate=None if gate is None else gate[start : start + len(rows)].to(dev), **norm)
                    loss.backward()
                    start += len(rows)
                    finite = finite & torch.isfinite(loss.detach())
                    for key, value in m.items():
                        collected.setdefault(key, []).append(torch.as_tensor(value, device=dev).detach().double())
                if share is not None and len(share):
                    rehearsal_value = self._rehearse(share)
                    finite = finite & math.isfinite(rehearsal_value)
                    collected.setdefault("dph_rehearsal_loss", []).append(torch.tensor(rehearsal_value, device=dev).double())
                # max_norm=inf measures without clipping, so the finiteness check always has a norm
                norm_value = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip or math.inf)
                if bool(finite & torch.isfinite(norm_value)):  # the one host read of the mini-batch
                    collected.setdefault("grad_norm", []).append(norm_value.detach().double())
                    self.optimizer.step()
                    self.scheduler.step()
                    self.nonfinite_streak = 0
                else:
                    self._skip_nonfinite_update()
                    skipped += 1
                self.optimizer.zero_grad(set_to_none=True)
                finite = torch.ones((), dtype=torch.bool, device=dev)
        bad = nonfinite_tensors(dict(self.model.named_parameters()))
        if bad:
            raise NonFiniteError(f"step {self.step + 1}: the optimizer step made {len(bad)} weight tensors non-finite "
                                 f"({bad[0]}, ...); {self.likely_causes()}")
        means = torch.stack([torch.stack(values).mean() for values in collected.values()]).tolist() if collected else []
        return {**dict(zip(collected, means)), "nonfinite_skipped": skipped}

    def _rehearse(self, rows: torch.Tensor) -> float:
        """Backward of DPH-RL's term on these rehearsal rows: coef x their token mean of f(u), u the
        ratio to pi_0's stored probability (no clip, no advantage); micro-batched."""
        d, dev = self.cfg.dph, self.device
        tokens = int(self.rehearsal.response_mask[rows].sum())
        total = 0.0
        for part in self.micro_batches(self.rehearsal, rows):
            loss = rehearsal_loss(self._score(self.model, self.rehearsal, part).logp, self.rehearsal.old_logp[part].to(dev),
                                  self.rehearsal.response_mask[part].to(dev), d.coef, d.divergence, d.alpha, tokens=tokens)
            loss.backward()
            total += float(loss.detach())
        return total

    def likely_causes(self) -> str:
        a, o = self.cfg.algorithm, self.cfg.optim
        return (f"likely causes: the learning rate (optim.lr={o.lr}, optim.grad_clip={o.grad_clip}) or a coefficient "
                f"(algorithm.entropy_coeff={a.entropy_coeff}, algorithm.kl_coef={a.kl_coef}, algorithm.loss={a.loss})")

    def _skip_nonfinite_update(self) -> None:
        """Drop this mini-batch's update; stop once ``train.max_nonfinite_updates`` come in a row."""
        self.nonfinite_streak += 1
        limit = self.cfg.train.max_nonfinite_updates
        if self.nonfinite_streak >= limit:
            raise NonFiniteError(f"step {self.step + 1}: {self.nonfinite_streak} updates in a row had a non-finite loss or "
                                 f"gradient and were skipped (train.max_nonfinite_updates={limit}); {self.likely_causes()}. "
                                 "Nothing non-finite was saved; --resume continues from the last checkpoint.")

    @torch.no_grad()
    def _batch_gate(self, bound, reads, rollout, micros, rewards, advantages):
        """A batch-wide selection (batch quantile, covariance) over the whole mini-batch under the
        current policy, shared by its micro-batches; rows in the micro-batches' order."""
        mini = torch.cat(micros)
        parts = [self._score(self.model, rollout, rows, reads) for rows in micros]
        cat = lambda name: torch.cat([getattr(p, name).cpu() for p in parts]) if getattr(parts[0], name) is not None else None  # noqa: E731
        return losses.token_gate(bound, logp=cat("logp"), old_logp=rollout.old_logp[mini], advantages=advantages[mini],
                                 response_mask=rollout.response_mask[mini], response_ids=rollout.response_ids[mini],
                                 topn_logp=cat("topn_logp"), topn_ids=cat("topn_ids"), entropy=cat("entropy"),
                                 rewards=rewards[mini])

    def sps_phase(self, rollout: Rollout, rewards: torch.Tensor, group_ids: torch.Tensor) -> dict:
        """SPS IRL phase (SPS §4, Alg. 1): maximise the likelihood of k low-likelihood rollouts per
        prompt (L2TE: negatives below the likelihood quantile first, then other negatives, then
        positives) for S steps at lr_scale x the RL learning rate."""
        s = self.cfg.sps
        mask = rollout.response_mask.float()
        likelihood = (rollout.old_logp * mask).sum(1) / mask.sum(1).clamp(min=1)
        threshold = torch.quantile(likelihood, s.quantile)
        chosen = []
        for g in group_ids.unique():
            members = (group_ids == g).nonzero().squeeze(-1)
            wrong = rewards[members] <= 0.5
            low = likelihood[members] <= threshold
            priority = torch.stack([~(wrong & low), ~wrong, likelihood[members]], 1).tolist()
            order = sorted(range(len(members)), key=lambda i: priority[i])
            chosen += members[order[: s.keep_per_prompt]].tolist()
        prompts = [rollout.prompts[i] for i in chosen]
        responses = [rollout.texts[i] for i in chosen]
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.optim.lr * s.lr_scale)
        self.model.train()
        for _ in range(s.irl_steps):
            loss = nll_loss(self.model, self.tokenizer, prompts, responses)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return {"irl_nll": loss.item(), "irl_demos": len(chosen),
                "irl_negative_frac": float((rewards[chosen] <= 0.5).float().mean())}

    def kl_reset(self) -> None:
        """ProRL: the reference becomes the current policy and the optimizer starts afresh."""
        self.reference.load_state_dict(self.model.state_dict())
        scheduler_state = self.scheduler.state_dict()
        self.optimizer = self._new_optimizer()
        self.scheduler = make_schedule(self.optimizer, self.cfg, self.cfg.train.steps * self._updates_per_step())
        self.scheduler.load_state_dict(scheduler_state)

    def train_step(self) -> dict:
        cfg, a = self.cfg, self.cfg.algorithm
        started = time.time()
        try:
            rollout, problems, rewards, group_ids, record = self.collect()
        except NonFiniteError as error:
            raise NonFiniteError(f"step {self.step + 1}: {error}; {self.likely_causes()}") from None
        if rollout is None:
            return {**record, "skipped": 1}
        mask = rollout.response_mask
        recipe = self.recipe()
        outcomes = {}  # final answers are extracted only for the steps that read them (outcome exploration)
        if "answers" in recipe.advantage_inputs:
            outcomes = {"answers": [outcome_answer(p, text) for p, text in zip(problems, rollout.texts)],
                        "prompt_ids": [p["prompt"] for p in problems], "answer_counts": self.answer_counts}
        advantages = recipe.advantages(rewards, group_ids, mask, entropy=rollout.entropy, old_logp=rollout.old_logp,
                                       step=self.step, **outcomes)
        record.update({
            "method": recipe.method,
            "reward": float(rewards.mean()),
            "accuracy": float((rewards > 0.5).float().mean()),
            "response_length": float(mask.sum(1).float().mean()),
            "rollout_entropy": metrics.entropy_summary(rollout.entropy, mask)["mean"],
            "branching_factor": metrics.mean_branching_factor(rollout.branching_factor, mask),
            **{f"lambda{i + 1}": v for i, v in enumerate(metrics.rank_logprobs(rollout.topn_logp, mask))},
            "lambda_sample": metrics.sampled_logprob(rollout.old_logp, mask),
        })
        record.update(self.update(rollout, rewards, advantages))
        record["lr"] = self.scheduler.get_last_lr()[0]
        if cfg.sps.enabled and (self.step + 1) % cfg.sps.every == 0:
            record.update(self.sps_phase(rollout, rewards, group_ids))
        if self.reference is not None and a.kl_reset_every and (self.step + 1) % a.kl_reset_every == 0:
            self.kl_reset()
            record["kl_reset"] = 1
        record.update({f"verifier_{k}": v for k, v in self.verifier.stats.items()})
        record["step_seconds"] = time.time() - started
        return record

    # ---------------------------------------------------------------- the loop

    def evaluate(self) -> dict:
        with mixed_precision(self.cfg, self.device):
            return evaluate_and_record(self.model, self.tokenizer, self.eval_problems, self.verifier, self.cfg,
                                       self.out, self.step, self.logger)

    def save(self) -> None:
        assert_savable(self.model, self.optimizer)
        state = self._state()

        def write(directory: Path):
            self.model.save_pretrained(directory)
            self.tokenizer.save_pretrained(directory)
            torch.save(state, directory / "trainer_state.pt")
            (directory / "run_config.json").write_text(json.dumps(to_dict(self.cfg), indent=2))

        save_checkpoint(self.out, self.step, write, self.cfg.train.keep_checkpoints)

    def interrupted(self) -> str:
        """Close what the run holds after Ctrl-C; what to tell the user."""
        self.logger.close()
        self.verifier.close()
        self._lock.close()
        saved = list_checkpoints(self.out)
        last = (f"last checkpoint: step {int(saved[-1].name[5:])} ({saved[-1]})" if saved else
                "no checkpoint yet, so --resume starts it again from step 0")
        return (f"interrupted at step {self.step} of {self.cfg.train.steps}; {last}. Resume with: "
                f"rlvr-explore train --resume --set run.out_dir={self.out}")

    def run(self) -> dict:
        t = self.cfg.train
        # resumed from the final checkpoint (killed before the policy was written): its final
        # evaluation was logged before that checkpoint was saved, so it is read, not run again
        final_eval = self.out / "eval" / f"step_{t.steps:06d}.json"
        evaluated_at_end = self.step >= t.steps and final_eval.exists()
        if self.step == 0 and self.evaluate_start:
            self.evaluate()
        bar = Progress(t.steps, f"{self.cfg.algorithm.method} {self.out.name}", initial=self.step)
        while self.step < t.steps:
            record = self.train_step()
            self.step += 1
            if self.step % t.log_every == 0 or self.step == t.steps:
                self.logger.log({"kind": "train", "step": self.step, **record})
            bar.update(1, **{k: record[k] for k in ("reward", "rollout_entropy", "lambda1", "pg_clipfrac") if k in record})
            if t.eval_every and self.step % t.eval_every == 0 and self.step != t.steps:
                self.evaluate()
            if t.save_every and self.step % t.save_every == 0:
                self.save()
        bar.close()
        last_eval = json.loads(final_eval.read_text()) if evaluated_at_end else self.evaluate()
        if not (t.save_every and self.step % t.save_every == 0):  # not just saved in the loop
            self.save()
        save_policy(self.model, self.tokenizer, self.out / "policy")
        mark_finished(self.out, self.step)
        self.logger.close()
        self.verifier.close()
        self._lock.close()
        return last_eval
