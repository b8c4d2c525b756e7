"""Policy losses keyed by name, and the one keyword entry point :func:`policy_loss`.

>>> from rlvr_explore import losses
>>> casp = losses.bind("casp", {"alpha": 0.01, "lam": 1.1})       # validated once
>>> loss, metrics = losses.policy_loss(casp, logp=..., old_logp=..., advantages=...,
...                                    response_mask=..., response_ids=..., topn_logp=...,
...                                    topn_ids=..., entropy=...)

A method's name with its hyper-parameters as keywords (``policy_loss("casp", ..., alpha=0.01)``)
binds them on the spot, for a notebook or a test. Every method is one short module of this
package, found here without a list of them (see docs/methods.md).
"""

from __future__ import annotations

import importlib
import pkgutil

import torch

from .core import (
    AGG_MODES,
    LOSSES,
    BoundLoss,
    LossConfig,
    LossInputs,
    aggregate,
    available,
    batch_normalizers,
    bind,
    entropy_gate,
    get_method,
    k3_kl,
    masked_mean,
    register_loss,
)

for _module in pkgutil.iter_modules(__path__):  # each module registers its losses as it is imported
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "AGG_MODES", "LOSSES", "BoundLoss", "LossConfig", "LossInputs", "aggregate", "available", "batch_normalizers",
    "bind", "entropy_gate", "get_method", "k3_kl", "policy_loss", "policy_token_loss", "register_loss", "token_gate",
]


def _validate(inputs: LossInputs) -> LossInputs:
    """Shapes, dtypes and the mask; (B,) advantages are broadcast over the response."""
    logp = inputs.logp
    if logp.dim() != 2:
        raise ValueError(f"logp must be (B, T), got shape {tuple(logp.shape)}")
    shape = tuple(logp.shape)
    advantages = inputs.advantages
    if advantages.dim() == 1 and advantages.shape[0] == shape[0]:
        advantages = advantages.unsqueeze(-1).expand(shape)
    for name in ("old_logp", "response_mask", "response_ids", "entropy", "ref_logp", "token_gate"):
        value = getattr(inputs, name)
        if value is not None and tuple(value.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {shape} like logp")
    if tuple(advantages.shape) != shape:
        raise ValueError(f"advantages has shape {tuple(inputs.advantages.shape)}, expected {shape} or ({shape[0]},)")
    for name in ("topn_logp", "topn_ids"):
        value = getattr(inputs, name)
        if value is not None and (value.dim() != 3 or tuple(value.shape[:2]) != shape):
            raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {shape + ('N',)}")
    if inputs.rewards is not None and tuple(inputs.rewards.shape) != shape[:1]:
        raise ValueError(f"rewards has shape {tuple(inputs.rewards.shape)}, expected ({shape[0]},)")
    mask = inputs.response_mask.bool()
    # These two checks read values, which on an accelerator waits for every queued kernel (two
    # host synchronisations per micro-batch); there either case gives a NaN loss, which the
    # trainer's non-finite guard reports and skips.
    if mask.device.type == "cpu" and not mask.any():
        raise ValueError("response_mask has no valid token: there is nothing to compute a loss on")
    if mask.device.type == "cpu" and not torch.isfinite(advantages[mask]).all():
        raise ValueError("advantages contain NaN or inf at valid tokens")
    inputs.advantages = advantages.to(logp.dtype)
    inputs.response_mask = mask
    return inputs


def _split(keywords: dict) -> tuple[dict, dict]:
    """(tensors named like LossInputs fields, hyper-parameters)."""
    tensors = {k: v for k, v in keywords.items() if k in LossInputs.__dataclass_fields__}
    return tensors, {k: v for k, v in keywords.items() if k not in tensors}


def _bound(loss: str | BoundLoss, hyperparameters: dict) -> BoundLoss:
    """``loss`` as bound: a bound loss as it is (it carries its hyper-parameters already), a
    name bound with ``hyperparameters``."""
    if isinstance(loss, BoundLoss):
        if hyperparameters:
            raise TypeError(f"loss '{loss.name}' is bound already; {sorted(hyperparameters)} would be ignored: "
                            "bind them with it (losses.bind)")
        return loss
    return bind(loss, hyperparameters)


def _prepare(loss: str | BoundLoss, tensors_and_hyperparameters: dict) -> tuple[BoundLoss, LossInputs]:
    tensors, hyperparameters = _split(tensors_and_hyperparameters)
    return _bound(loss, hyperparameters), _validate(LossInputs(**tensors))


def token_gate(loss: str | BoundLoss, **tensors_and_hyperparameters) -> torch.Tensor | None:
    """The method's token selection over the tensors given (None for methods without one).

    Call it once on the whole batch and pass slices as ``token_gate=`` to each micro-batch's
    :func:`policy_loss`, so that batch-wide quantiles and covariances see the global batch.
    """
    bound, inputs = _prepare(loss, tensors_and_hyperparameters)
    if bound.method.gate is None:
        return None
    with torch.no_grad():
        return bound.method.gate(inputs, bound.config)


def policy_token_loss(loss: str | BoundLoss, **tensors_and_hyperparameters) -> tuple[torch.Tensor, torch.Tensor, LossConfig, dict]:
    """The per-token loss (B, T) of ``loss`` with the entropy bonus and the KL term added, the
    policy-gradient part alone, the resolved config, and metrics; for engines that aggregate
    with their own helper (verl's ``agg_loss``). Takes the keywords of :func:`policy_loss` (but
    the normalisers); :func:`policy_loss` reduces its result."""
    bound, inputs = _prepare(loss, tensors_and_hyperparameters)
    spec, cfg = bound.method, bound.config
    if spec.gate is not None and inputs.token_gate is None:
        with torch.no_grad():
            inputs.token_gate = spec.gate(inputs, cfg)
    if inputs.token_gate is not None:
        inputs.token_gate = inputs.token_gate.bool() & inputs.response_mask

    pg_token_loss, metrics = spec.token_loss(inputs, cfg)
    mask = inputs.response_mask
    token_loss = pg_token_loss
    if cfg.entropy_coeff:
        inputs.require(f"{spec.name} with entropy_coeff", "entropy")
        token_loss = token_loss - cfg.entropy_coeff * inputs.entropy
    if cfg.kl_coef:
        inputs.require(f"{spec.name} with kl_coef", "ref_logp")
        kl = k3_kl(inputs.logp, inputs.ref_logp)
        token_loss = token_loss + cfg.kl_coef * kl
        metrics["kl"] = masked_mean(kl, mask)
    metrics["ppo_kl"] = masked_mean(inputs.old_logp - inputs.logp, mask)
    if inputs.entropy is not None:
        metrics["entropy"] = masked_mean(inputs.entropy, mask)
    return token_loss, pg_token_loss, cfg, metrics


def policy_loss(
    loss: str | BoundLoss,
    *,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    response_ids: torch.Tensor | None = None,
    topn_logp: torch.Tensor | None = None,
    topn_ids: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    rewards: torch.Tensor | None = None,
    token_gate: torch.Tensor | None = None,
    num_tokens: int | None = None,
    num_seqs: int | None = None,
    **hyperparameters,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The scalar loss of ``loss`` (a :class:`BoundLoss`, or a method's name with its
    hyper-parameters as keywords) on one (micro-)batch, and detached metrics.

    Tensors follow the padded layout of docs/architecture.md ((B, T), ``topn_*`` (B, T, N), ``rewards`` (B,)); ``advantages`` may
    be (B,); pass the optional ones the method needs. ``num_tokens``/``num_seqs`` are the global batch's counts
    (:func:`batch_normalizers`) so that micro-batch losses add up to the full-batch loss;
    ``token_gate`` is a precomputed global selection (:func:`token_gate`). Hyper-parameters are the
    fields of the method's config class (``losses.get_method(name).config``), including
    ``loss_agg_mode``, ``kl_coef`` (needs ``ref_logp``) and ``entropy_coeff`` (needs ``entropy``
    with gradient).
    """
    token_loss, pg_token_loss, cfg, metrics = policy_token_loss(
        loss, logp=logp, old_logp=old_logp, advantages=advantages, response_mask=response_mask,
        response_ids=response_ids, topn_logp=topn_logp, topn_ids=topn_ids, entropy=entropy, ref_logp=ref_logp,
        rewards=rewards, token_gate=token_gate, **hyperparameters)
    mask = response_mask.bool()

    def reduce(values):
        return aggregate(values, mask, cfg.loss_agg_mode, num_tokens=num_tokens, num_seqs=num_seqs,
                         max_response_length=cfg.max_response_length)

    total = reduce(token_loss)
    metrics["pg_loss"] = reduce(pg_token_loss.detach())
    metrics["loss"] = total.detach()
    return total, metrics
