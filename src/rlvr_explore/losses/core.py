"""The pieces every policy loss shares: inputs, hyper-parameters, registry, aggregation.

A registered loss is a pure function ``token_loss(inputs, cfg) -> (loss (B, T), metrics)``
returning the per-token loss, with ``cfg`` an instance of its config class (``LossConfig`` or a
subclass in the loss's own module), bound once by :func:`bind`; :func:`rlvr_explore.losses.policy_loss` adds the entropy bonus and
the KL term and reduces with :func:`aggregate`, the one aggregation helper every loss goes
through. Notation follows docs/methods.md: r_t = exp(logp_t - old_logp_t), A the advantage.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from typing import Callable

import torch

from rlvr_explore.candidates import at_least_fp32
from rlvr_explore.documented import documented

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


@dataclass
class LossInputs:
    """Tensors of one (micro-)batch in the padded layout of docs/architecture.md (all (B, T) unless noted)."""

    logp: torch.Tensor
    old_logp: torch.Tensor
    advantages: torch.Tensor
    response_mask: torch.Tensor
    response_ids: torch.Tensor | None = None
    topn_logp: torch.Tensor | None = None  # (B, T, N), with gradient
    topn_ids: torch.Tensor | None = None  # (B, T, N)
    entropy: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    rewards: torch.Tensor | None = None  # (B,)
    token_gate: torch.Tensor | None = None  # (B, T) bool, precomputed over the global batch

    def require(self, method: str, *names: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(f"method '{method}' needs {', '.join(missing)}; pass them to policy_loss")


@dataclass
class LossConfig:
    """The hyper-parameters every policy loss takes. A method with settings of its own declares a
    subclass in its module (CaSP's ``CaspConfig``), so each field and its check sit beside the
    code that reads it."""

    clip_eps_low: float = documented(0.2, "Lower PPO clip: ratio >= 1 - eps_low (CaSP §2, Eq. 1; DAPO keeps 0.2).")
    clip_eps_high: float = documented(0.2, "Upper PPO clip: ratio <= 1 + eps_high (DAPO 'clip-higher' 0.28, SPS App. B.2).")
    loss_agg_mode: str = documented(
        "seq-mean-token-mean", f"Aggregation over tokens, one of {AGG_MODES}; each is defined in `aggregate` and "
        "docs/methods.md (verl's names; 'seq-mean-token-sum-norm' is Dr.GRPO's).")
    max_response_length: int | None = documented(
        None, "Constant divisor of 'seq-mean-token-sum-norm' (Dr.GRPO); defaults to the padded length T."
    )
    clip_ratio_c: float | None = documented(
        None, "Dual-clip PPO (Ye et al. 2020, arXiv 1912.09729): for A < 0 the token loss is at most -c A. null is off; "
        "verl's default is 3 and the official Clip-Cov recipes use 10.")
    kl_coef: float = documented(
        0.0, "beta of the k3 KL to the reference policy; needs ref_logp. CaSP Eq. 1 has the term without a value; "
        "the official SimKO script trains without it.")
    entropy_coeff: float = documented(0.0, "c of the entropy bonus, loss - c * H (CaSP baselines 0.01; two-stage paper (arXiv 2510.04028) App. C.2 1e-4).")

    def validate(self) -> None:
        """ValueError naming the first invalid field; a subclass checks its own fields, then calls this."""
        checks = [
            (self.clip_eps_low >= 0 and self.clip_eps_high >= 0, "clip_eps_low/high must be >= 0"),
            (self.loss_agg_mode in AGG_MODES, f"loss_agg_mode must be one of {AGG_MODES}, got {self.loss_agg_mode!r}"),
            (self.max_response_length is None or self.max_response_length > 0, "max_response_length must be > 0"),
            (self.clip_ratio_c is None or self.clip_ratio_c > 1, f"clip_ratio_c must be > 1 or None, got {self.clip_ratio_c}"),
            (self.kl_coef >= 0, f"kl_coef must be >= 0, got {self.kl_coef}"),
            (self.entropy_coeff >= 0, f"entropy_coeff must be >= 0, got {self.entropy_coeff}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class EntropyGateConfig(LossConfig):
    """The settings of :func:`entropy_gate`, the token selection CaSP and forking tokens share."""

    q: float = documented(
        0.8, "Entropy quantile of the gate H_t > quantile_q(H) (CaSP §4, App. E tau_0.8; forking tokens top 20%)."
    )
    quantile_scope: str = documented(
        "response", "Where the entropy quantile is taken: 'response' (CaSP App. E) or 'batch' (SimKO, forking)."
    )

    def validate(self) -> None:
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {self.q}")
        if self.quantile_scope not in ("response", "batch"):
            raise ValueError(f"quantile_scope must be 'response' or 'batch', got {self.quantile_scope!r}")
        super().validate()


def config_keys(config: type) -> tuple[str, ...]:
    """The hyper-parameters a config class takes, in declaration order."""
    return tuple(f.name for f in fields(config))


TokenLoss = Callable[[LossInputs, LossConfig], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


@dataclass(frozen=True)
class Method:
    """A registered policy loss: its token-loss function, its config class and what it reads."""

    name: str
    token_loss: TokenLoss
    source: str
    config: type = LossConfig  # the typed hyper-parameters the method takes (a LossConfig subclass)
    defaults: dict = field(default_factory=dict)  # the method's own defaults for fields of its config
    advantage: str = "grpo"  # the advantage estimator the method is defined with
    gate: Callable | None = None  # (inputs, cfg) -> (B, T) bool token selection from detached statistics
    batch_wide_gate: Callable[[LossConfig], bool] = lambda cfg: False  # does the gate read other responses?
    reads: frozenset[str] = frozenset()  # statistics beyond log-probs that the loss or its gate reads: entropy, topn

    @property
    def accepted_keys(self) -> frozenset[str]:
        """Every hyper-parameter this method takes: the fields of its config class."""
        return frozenset(config_keys(self.config))

    def default_config(self) -> LossConfig:
        """The method's config with nothing set: its class's defaults and its own."""
        return self.config(**self.defaults)

    def own_defaults(self) -> dict:
        """What sets the method apart from the common settings: the defaults of its own fields and
        its own values for common ones."""
        common = set(config_keys(LossConfig))
        config = self.default_config()
        return {key: getattr(config, key) for key in config_keys(self.config) if key not in common or key in self.defaults}


@dataclass(frozen=True)
class BoundLoss:
    """A policy loss with its hyper-parameters, validated once (:func:`bind`): what an engine holds
    and passes to :func:`rlvr_explore.losses.policy_loss` for every micro-batch."""

    method: Method
    config: LossConfig

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def statistics(self) -> frozenset[str]:
        """The statistics beyond log-probs that the scoring pass computes for this loss ("entropy",
        "topn"); an entropy bonus adds the entropy."""
        return self.method.reads | {"entropy"} if self.config.entropy_coeff else self.method.reads

    @property
    def top_n(self) -> int:
        """N, the candidates per token the loss reads (0 for a loss that reads none)."""
        return getattr(self.config, "top_n", 0) if "topn" in self.method.reads else 0

    @property
    def batch_wide_gate(self) -> bool:
        """True when the token selection reads other responses (batch quantile, covariance): a
        batch split into micro-batches must then share one :func:`rlvr_explore.losses.token_gate`."""
        return self.method.gate is not None and self.method.batch_wide_gate(self.config)


LOSSES: dict[str, Method] = {}
ALIASES: dict[str, str] = {}


def register_loss(name: str, source: str, *, config=LossConfig, defaults=None, advantage="grpo", aliases=(), gate=None,
                  batch_wide_gate=None, reads=()):
    """Decorator: add a token-loss function to the registry under ``name`` (and ``aliases``).

    ``config`` is the dataclass of its hyper-parameters (``LossConfig`` or a subclass declared
    beside the loss), ``defaults`` the method's own values for some of its fields.
    ``gate(inputs, cfg) -> (B, T) bool`` selects tokens from detached batch statistics; the
    selection reaches the token loss as ``inputs.token_gate``. ``batch_wide_gate(cfg)`` says
    whether it reads statistics of other responses (then a split batch must share one gate).
    ``reads`` names the statistics beyond log-probs that the loss or its gate needs ("entropy",
    "topn"), so that the scoring pass computes nothing else.
    """

    def wrap(fn: TokenLoss) -> TokenLoss:
        taken = {name, *aliases} & (set(LOSSES) | set(ALIASES))
        if taken:
            raise ValueError(f"policy loss {sorted(taken)} is registered already: a second definition would replace it")
        if not (isinstance(config, type) and issubclass(config, LossConfig)):
            raise TypeError(f"loss '{name}': config must be LossConfig or a subclass, got {config!r}")
        unknown = set(defaults or {}) - set(config_keys(config))
        if unknown:
            raise ValueError(f"loss '{name}' sets defaults for {sorted(unknown)}, which {config.__name__} does not declare")
        if not set(reads) <= {"entropy", "topn"}:
            raise ValueError(f"loss '{name}' reads unknown statistics {sorted(set(reads) - {'entropy', 'topn'})}")
        LOSSES[name] = Method(name, fn, source, config, dict(defaults or {}), advantage, gate,
                              batch_wide_gate or (lambda cfg: False), frozenset(reads))
        for alias in aliases:
            ALIASES[alias] = name
        return fn

    return wrap


def get_method(name: str) -> Method:
    canonical = ALIASES.get(name, name)
    if canonical not in LOSSES:
        raise ValueError(f"unknown policy loss {name!r}; available: {', '.join(available())}")
    return LOSSES[canonical]


def available() -> list[str]:
    """Names of every registered policy loss, aliases included."""
    return sorted([*LOSSES, *ALIASES])


def bind(method: str | Method, hyperparameters: dict | None = None) -> BoundLoss:
    """``method`` with ``hyperparameters`` over its defaults, validated: a key the method does not
    take is refused with the keys it does take."""
    spec = method if isinstance(method, Method) else get_method(method)
    hyperparameters = dict(hyperparameters or {})
    bad = sorted(set(hyperparameters) - spec.accepted_keys)
    if bad:
        raise ValueError(
            f"hyper-parameter(s) {bad} do not apply to loss '{spec.name}'; it takes {sorted(spec.accepted_keys)}"
        )
    config = spec.config(**{**spec.defaults, **hyperparameters})
    config.validate()
    return BoundLoss(spec, config)


def key_types() -> dict[str, object]:
    """The type of every loss hyper-parameter, over all registered config classes (a key has one
    type wherever it is declared), to type-check a config file's ``algorithm.loss``."""
    types: dict[str, object] = {}
    for spec in LOSSES.values():
        types.update(typing.get_type_hints(spec.config))
    return types


# ---------------------------------------------------------------- aggregation


def batch_normalizers(response_mask: torch.Tensor) -> dict[str, int]:
    """Token and sequence counts of a whole batch, to pass to every micro-batch's loss.

    With them, the micro-batch losses sum to the full-batch loss whatever the split.
    """
    mask = response_mask.bool()
    return {"num_tokens": int(mask.sum()), "num_seqs": int(mask.any(-1).sum())}


def aggregate(
    values: torch.Tensor,
    response_mask: torch.Tensor,
    mode: str,
    *,
    num_tokens: int | None = None,
    num_seqs: int | None = None,
    max_response_length: int | None = None,
) -> torch.Tensor:
    """Reduce per-token ``values`` (B, T) to a scalar; the one reduction every loss uses.

    With m the mask, L_i = sum_t m_it, N_tok the valid tokens and N_seq the sequences with one:
      token-mean               sum_it m_it v_it / N_tok
      seq-mean-token-mean      (1 / N_seq) sum_i (sum_t m_it v_it) / L_i
      seq-mean-token-sum       (1 / N_seq) sum_i sum_t m_it v_it
      seq-mean-token-sum-norm  (1 / N_seq) sum_i (sum_t m_it v_it) / L_max   (Dr.GRPO; L_max =
                               ``max_response_length``, else the padded length T)
    These equal verl 0.9's ``agg_loss`` on one rank. Earlier verl releases computed the last
    one as sum_i (...) / L_max without the 1 / N_seq.

    ``num_tokens``/``num_seqs`` are the global batch's counts (:func:`batch_normalizers`); left
    out, they are this batch's own. Sequences without a valid token do not count.
    """
    mask = response_mask.to(values.dtype)
    masked = values * mask
    if mode == "token-mean":
        return masked.sum() / (num_tokens if num_tokens is not None else mask.sum().clamp(min=1))
    seq_tokens = mask.sum(-1)
    if mode == "seq-mean-token-mean":
        per_seq = masked.sum(-1) / seq_tokens.clamp(min=1)
    elif mode == "seq-mean-token-sum":
        per_seq = masked.sum(-1)
    elif mode == "seq-mean-token-sum-norm":
        per_seq = masked.sum(-1) / (max_response_length or values.shape[-1])
    else:
        raise ValueError(f"loss_agg_mode must be one of {AGG_MODES}, got {mode!r}")
    return per_seq.sum() / (num_seqs if num_seqs is not None else (seq_tokens > 0).sum().clamp(min=1))


def masked_mean(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens, for metrics."""
    return aggregate(values.detach().float(), response_mask, "token-mean")


# ---------------------------------------------------------------- shared terms


def ratio(inputs: LossInputs) -> torch.Tensor:
    """r_t = exp(logp_t - old_logp_t)."""
    return torch.exp(inputs.logp - inputs.old_logp)


def clipped_token_loss(ratio: torch.Tensor, advantages: torch.Tensor, cfg: LossConfig):
    """L_t = -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), and where the clip is active.

    With ``cfg.clip_ratio_c`` (dual clip), L_t = min(L_t, -c A) where A < 0, as verl's vanilla loss.
    """
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - cfg.clip_eps_low, 1.0 + cfg.clip_eps_high)
    loss = torch.maximum(unclipped, clipped)
    if cfg.clip_ratio_c is not None:
        loss = torch.where(advantages < 0, torch.minimum(loss, -advantages * cfg.clip_ratio_c), loss)
    return loss, clipped > unclipped


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(pi || ref): exp(d) - d - 1 with d = ref - logp, as verl's ``low_var_kl``:
    d clamped to [-20, 20] first (so exp(d) cannot overflow into a NaN gradient), the result to
    [-10, 10]."""
    delta = (ref_logp - logp).clamp(-20.0, 20.0)
    return (torch.exp(delta) - delta - 1.0).clamp(-10.0, 10.0)


def linear_quantile(values: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    """Row-wise quantile of ``values`` over ``mask`` with linear interpolation (as torch.quantile).

    Rows without a valid entry give NaN (so every comparison with them is False). Works for any
    size, where torch.quantile refuses inputs of more than 16M elements. Computed in the input's
    dtype (half types in float32): a float32 threshold of float64 entropies flips the strict '>'
    at the entry that sits on the quantile.
    """
    filled = at_least_fp32(values.detach()).masked_fill(~mask, float("inf"))
    ordered = filled.sort(dim=-1).values
    count = mask.sum(-1, keepdim=True)
    position = q * (count - 1).clamp(min=0).to(ordered.dtype)
    low = position.floor().long()
    high = position.ceil().long()
    lo_val = ordered.gather(-1, low)
    hi_val = ordered.gather(-1, high)
    result = lo_val + (hi_val - lo_val) * (position - low)
    return result.masked_fill(count == 0, float("nan"))


def entropy_gate(inputs: LossInputs, cfg: EntropyGateConfig) -> torch.Tensor:
    """w_t = 1[H_t > quantile_q(H)] over the response's valid tokens (``scope='response'``) or
    over all valid tokens of the batch (``scope='batch'``); strict '>' (CaSP §4, App. E)."""
    inputs.require("an entropy-gated loss", "entropy")
    entropy, mask = inputs.entropy.detach(), inputs.response_mask.bool()
    if cfg.quantile_scope == "response":
        threshold = linear_quantile(entropy, mask, cfg.q)
    else:
        threshold = linear_quantile(entropy.reshape(1, -1), mask.reshape(1, -1), cfg.q).reshape(())
    return (entropy > threshold) & mask
