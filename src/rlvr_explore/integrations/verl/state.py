"""The plugin's state, in one object: what the driver keeps across steps, the actor's place in a
step, the seams fitted or refused, the losses bound per actor config. Hooks read it at call time,
so a test can swap any part of it."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field


@dataclass
class DriverState:
    """The driver's state across steps."""

    step: int | None = None  # the trainer's step as ours counts it (updates made, 0 first)
    answer_counts: dict = field(default_factory=dict)  # outcome exploration's counts, kept with checkpoints
    rehearsal: dict | None = None  # DPH-RL's rehearsal set, read once from its path
    rehearsal_path: str | None = None


@dataclass
class ActorState:
    """The actor process's place in the step's mini-batches (DPH-RL's shares)."""

    step: int | None = None
    updates: int = 0


@dataclass
class PluginState:
    driver: DriverState = field(default_factory=DriverState)
    actor: ActorState = field(default_factory=ActorState)
    fitted: set[str] = field(default_factory=set)  # seams that fit (wrapped, or checked when only called)
    refused: dict[str, str] = field(default_factory=dict)  # seam -> why it was left as verl wrote it
    # (method, id of the actor config, RLVR_EXPLORE_HP) -> (the config, its bound loss): a cache
    bound_losses: dict[tuple, tuple] = field(default_factory=dict)


STATE = PluginState()

# per call, not state: the current micro-batch's statistics in the padded (B, T) layout, set by
# ppo_loss around verl's own; what the estimator reads beyond rewards, set around compute_advantage
MICRO_BATCH_STATISTICS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("rlvr_statistics", default=None)
ADVANTAGE_INPUTS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("rlvr_advantage_inputs", default=None)
