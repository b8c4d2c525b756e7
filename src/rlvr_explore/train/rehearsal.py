"""DPH-RL's data (arXiv 2509.07430, the official pipeline): the initial policy pi_0 samples
``dph.presample`` responses per training prompt; prompts it solves every time are rehearsed, the
others are trained with RL. pi_0 then samples ``dph.samples`` responses per rehearsed prompt and
the correct ones, with pi_0's token log-probs, form the rehearsal set, collected once and saved
in the run directory (``rehearsal.pt``) so that ``--resume`` continues with the same one."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from rlvr_explore.losses.rehearsal import kept_correct, mastered
from rlvr_explore.rollout import Rollout

from .config import Config
from .evaluate import sample_and_verify

log = logging.getLogger(__name__)


def build_rehearsal(model, tokenizer, problems: list[dict], verifier, cfg: Config, generator) -> dict:
    """{'rl_prompts': prompts left to RL, 'rl_rows': their positions in ``problems``, 'rehearsal': a
    Rollout of pi_0's correct responses to the solved prompts (``old_logp`` holds pi_0's log-probs at
    the rollout temperature) or None, 'stats'}."""
    d = cfg.dph
    model.eval()
    _, _, rewards = sample_and_verify(model, tokenizer, problems, d.presample, verifier, cfg, generator,
                                      "dph pre-sampling")
    solved = mastered(torch.tensor(rewards).view(len(problems), d.presample)).tolist()
    rehearsed = [p for p, s in zip(problems, solved) if s]
    rl_rows = [i for i, s in enumerate(solved) if not s]
    rl = [problems[i]["prompt"] for i in rl_rows]
    rehearsal = None
    if rehearsed:
        rollout, _, rewards = sample_and_verify(model, tokenizer, rehearsed, d.samples, verifier, cfg, generator,
                                                "dph rehearsal set")
        correct = kept_correct((torch.tensor(rewards) > 0.5).view(len(rehearsed), d.samples), d.keep_per_prompt)
        if correct.any():
            rehearsal = rollout.select(correct.flatten().nonzero().squeeze(-1))
    stats = {"dph_rehearsed_prompts": len(rehearsed), "dph_rl_prompts": len(rl),
             "dph_rehearsal_responses": 0 if rehearsal is None else len(rehearsal.texts)}
    if rehearsal is None:
        log.warning("DPH-RL: no rehearsal response (pi_0 solved %d prompts in all %d samples): pure RL",
                    len(rehearsed), d.presample)
    return {"rl_prompts": rl, "rl_rows": rl_rows, "rehearsal": rehearsal, "stats": stats}


def load_or_build(out: Path, resumed: bool, *args) -> dict:
    """The run's rehearsal data: read back on ``--resume``, built and saved otherwise."""
    path = out / "rehearsal.pt"
    if resumed:
        if not path.exists():
            raise FileNotFoundError(f"{path}: the run's DPH-RL rehearsal set is missing; it cannot be resumed alike")
        data = torch.load(path, weights_only=False)
        if not isinstance(data.get("rehearsal"), (Rollout, type(None))):
            raise ValueError(f"{path}: not a rehearsal set")
        return data
    data = build_rehearsal(*args)
    partial = path.with_suffix(".pt.tmp")
    torch.save(data, partial)
    partial.replace(path)
    return data
