"""Training objectives on per-token tensors.

Every objective takes per-token log-probabilities of the *dataset* tokens, shape ``[B, T]``, a ``mask`` of the
same shape (1 where the token is a response token that is trained on, 0 for prompt and padding) and
``num_tokens``: the number of masked tokens in the whole *mini batch* the optimizer step is taken on.
Dividing by that global count (not by this call's ``mask.sum()``) makes gradient accumulation over micro
batches (and, later, over ranks) give exactly the token-mean over the mini batch, as verl's ``token-mean``
loss aggregation intends. It defaults to ``mask.sum()``, i.e. one call = one mini batch.

Each returns ``(loss, metrics)``: ``loss`` is a scalar to call ``backward()`` on; ``metrics`` is a dict of
detached floats measured over *this call's* masked tokens (means, fractions, maxima), with ``"num_tokens"``
so that a caller can weight them when it aggregates micro batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Metrics = dict[str, "float | torch.Tensor"]  # device scalars: the training step reads them all in one sync

# r = exp(logp - old_logp) is computed from a clamped log-ratio, as verl does, so that one wild token cannot
# overflow the ratio to inf (whose gradient would then be nan).
LOG_RATIO_CLAMP = 20.0


def _num_tokens(mask: torch.Tensor, num_tokens: int | float | torch.Tensor | None) -> torch.Tensor:
    n = mask.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=torch.float32)
    return n.to(torch.float32).clamp(min=1.0)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the mask's tokens (0 for an empty mask), a device scalar: the step reads every metric in one sync."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def sft_loss(
    logprobs: torch.Tensor,
    mask: torch.Tensor,
    num_tokens: int | float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Token-mean negative log-likelihood, the paper's eq. 2.

    ``loss = -sum(logprobs * mask) / num_tokens``. Seen as policy gradient (§2.1), this is eq. 3 with every
    dataset token's advantage fixed to 1 and no importance ratio.
    """
    mask = mask.to(logprobs.dtype)
    loss = -(logprobs * mask).sum() / _num_tokens(mask, num_tokens)
    metrics = {"nll": -_masked_mean(logprobs.detach(), mask), "num_tokens": mask.sum()}
    return loss, metrics


def psft_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    num_tokens: int | float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    r"""The PSFT loss, the paper's eq. 6 with advantage A = 1.

    Paper (eq. 6)::

        L_PSFT(θ) = -E_{(s_t, a*_t) ~ D} [ min( r_t(θ) Â_t , clip(r_t(θ), 1-ε_low, 1+ε_high) Â_t ) ],
        r_t(θ) = π_θ(a*_t | s_t) / π_θ_old(a*_t | s_t),   Â_t = 1

    Code (each line next to its term)::

        r    = exp(clamp(logprobs - old_logprobs, -20, 20))          # r_t(θ); old_logprobs carry no grad
        surr = min(r, clip(r, 1 - clip_low, 1 + clip_high))           # min(r Â, clip(r) Â) with Â = 1
        loss = -sum(surr * mask) / num_tokens                         # -E over dataset tokens (token-mean)

    Why the lower clip never acts when A = 1: ``min(r, clip(r, 1-ε_low, 1+ε_high))`` equals ``r`` whenever
    ``r <= 1+ε_high`` (for r < 1-ε_low, clip(r) = 1-ε_low > r so the min picks r, which still has a gradient).
    Only ``r > 1+ε_high`` selects the constant ``1+ε_high`` and zeroes the token's gradient (eq. 7): a token
    whose probability has already risen by more than the trust region since the old policy stops being pushed
    up. A token whose probability fell (r < 1-ε_low) keeps its full gradient, pulling it back up. So
    ``clip_low`` is kept only for symmetry with PPO; ``clip_fraction_low`` is logged to show how often r
    left the region from below, but it never changes the gradient.

    The gradient of a kept token is ``-r * ∇logp / num_tokens``: at r = 1 (old policy = current, e.g. the first
    mini batch after a refresh) it is exactly the SFT gradient.
    """
    mask = mask.to(logprobs.dtype)
    old_logprobs = old_logprobs.detach()
    log_ratio = torch.clamp(logprobs - old_logprobs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)  # [B, T]
    surrogate = torch.minimum(ratio, torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high))  # [B, T]
    loss = -(surrogate * mask).sum() / _num_tokens(mask, num_tokens)

    with torch.no_grad():
        r = ratio.detach()
        n = mask.sum()
        ratio_max = torch.where(n > 0, r.masked_fill(mask == 0, float("-inf")).max(), 0.0)
        metrics = {
            "nll": -_masked_mean(logprobs.detach(), mask),
            "clip_fraction_high": _masked_mean(clipped(r, clip_high).to(r.dtype), mask),
            "clip_fraction_low": _masked_mean((r < 1.0 - clip_low).to(r.dtype), mask),
            "ratio_mean": _masked_mean(r, mask),
            "ratio_max": ratio_max,
            "approx_kl": _masked_mean(old_logprobs - logprobs.detach(), mask),
            "num_tokens": n,
        }
    return loss, metrics


def clipped(ratio: Any, clip_high: float) -> Any:
    """Whether a token's gradient is clipped away by eq. 6 with A = 1: ``r > 1 + ε_high`` (tensor or float)."""
    return ratio > 1.0 + clip_high


# verl's low-variance KL ("k3", Schulman's estimator) clamps its log-ratio and its value; same bounds here.
K3_LOG_RATIO_CLAMP = 20.0
K3_VALUE_CLAMP = 10.0


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator ``exp(ref - logp) - (ref - logp) - 1`` (>= 0, zero when policy = reference)."""
    log_ratio = torch.clamp(ref_logprobs - logprobs, -K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(log_ratio) - log_ratio - 1.0, -K3_VALUE_CLAMP, K3_VALUE_CLAMP)


def sft_kl_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float = 0.5,
    estimator: str = "k3",
    num_tokens: int | float | torch.Tensor | None = None,
    full_kl: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """SFT-KL (the paper's baseline, §4.1): token-mean NLL + ``kl_coef`` x KL to the frozen initial model.

    ``estimator="k3"``: the sampled-token low-variance estimate :func:`k3_kl` on the dataset tokens (what verl's
    ``use_kl_loss`` with ``low_var_kl`` computes). ``estimator="full"``: the exact per-position
    ``KL(π_θ(·|s) || π_ref(·|s))`` over the whole vocabulary, which the caller computes and passes as
    ``full_kl`` ``[B, T]`` (it needs both distributions; see ``psftlib.logprobs.full_vocab_kl``). The two are
    different quantities: a coefficient tuned for one does not transfer to the other.
    """
    mask = mask.to(logprobs.dtype)
    ref_logprobs = ref_logprobs.detach()
    if estimator == "k3":
        kl = k3_kl(logprobs, ref_logprobs)
    elif estimator == "full":
        if full_kl is None:
            raise ValueError("sft_kl_loss(estimator='full') needs full_kl, the per-token full-vocabulary KL")
        kl = full_kl
    else:
        raise ValueError(f"kl estimator {estimator!r}: expected 'k3' or 'full'")
    n = _num_tokens(mask, num_tokens)
    loss = (-(logprobs * mask).sum() + kl_coef * (kl * mask).sum()) / n
    metrics = {
        "nll": -_masked_mean(logprobs.detach(), mask),
        "kl": _masked_mean(kl.detach(), mask),
        "num_tokens": mask.sum(),
    }
    return loss, metrics


def dft_loss(
    logprobs: torch.Tensor, mask: torch.Tensor, num_tokens: int | float | torch.Tensor | None = None
) -> tuple[torch.Tensor, Metrics]:
    """DFT (Wu et al. 2025; paper eq. 12): NLL of each token weighted by its *detached* probability.

    ``loss = -sum(sg(exp(logp)) * logp * mask) / num_tokens``: the gradient of a token is ``-p ∇logp``, i.e.
    ``-∇p``; confident tokens get pushed, unlikely ones barely.
    """
    mask = mask.to(logprobs.dtype)
    weight = torch.exp(logprobs.detach())
    loss = -(weight * logprobs * mask).sum() / _num_tokens(mask, num_tokens)
    metrics = {
        "nll": -_masked_mean(logprobs.detach(), mask),
        "weight_mean": _masked_mean(weight, mask),
        "num_tokens": mask.sum(),
    }
    return loss, metrics


def iw_sft_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    clip: tuple[float, float] = (0.2, 1.8),
    level: str = "token",
    num_tokens: int | float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """iw-SFT (Qin & Springenberg 2025; paper eq. 13): NLL weighted by a detached, clipped importance weight.

    ``level="token"``: ``w_t = clip(exp(logp_t - ref_t), clip[0], clip[1])`` per token (the paper's eq. 13,
    range 0.2 / 1.8 as the paper used). ``level="sequence"``: one weight per sequence,
    ``w = clip(exp(sum_t mask_t (logp_t - ref_t)), ...)``, iw-SFT's own default. The weight carries no gradient.
    """
    mask = mask.to(logprobs.dtype)
    log_w = (logprobs - ref_logprobs).detach()
    if level == "token":
        log_w = log_w.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    elif level == "sequence":
        log_w = (
            (log_w * mask).sum(-1, keepdim=True).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).expand_as(logprobs)
        )
    else:
        raise ValueError(f"iw_sft level {level!r}: expected 'token' or 'sequence'")
    weight = torch.clamp(torch.exp(log_w), clip[0], clip[1])
    loss = -(weight * logprobs * mask).sum() / _num_tokens(mask, num_tokens)
    metrics = {
        "nll": -_masked_mean(logprobs.detach(), mask),
        "weight_mean": _masked_mean(weight, mask),
        "clip_fraction_high": _masked_mean((torch.exp(log_w) > clip[1]).to(weight.dtype), mask),
        "clip_fraction_low": _masked_mean((torch.exp(log_w) < clip[0]).to(weight.dtype), mask),
        "num_tokens": mask.sum(),
    }
    return loss, metrics


# ---- the registry: every objective the training loop can run, declared once ---------------------------------


@dataclass
class TokenInputs:
    """What a loss may read, per token ``[B, T]``: the policy's log-probs of the dataset tokens, the trained-token
    mask, the mini batch's trained-token count, and (when the objective needs them) the old policy's and the
    reference's log-probs and the exact full-vocabulary KL."""

    logprobs: torch.Tensor
    mask: torch.Tensor
    num_tokens: float
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    full_kl: torch.Tensor | None = None


@dataclass(frozen=True)
class Objective:
    """A training objective: ``loss(inputs, cfg) -> (loss, metrics)`` with ``cfg`` a ``TrainConfig``.

    ``needs_reference``: reads π_ref, the frozen initial model (``inputs.ref_logprobs``). ``needs_old_policy``:
    reads π_old (``inputs.old_logprobs``), refreshed per ``old_policy_refresh``; with ``never`` the old policy is
    the initial model, so π_ref is kept for it. ``exact_kl(cfg)``: reads the exact full-vocabulary KL to π_ref
    (``inputs.full_kl``), which needs both models' whole distributions.
    """

    name: str
    loss: Callable[[TokenInputs, Any], tuple[torch.Tensor, Metrics]]
    needs_reference: bool = False
    needs_old_policy: bool = False
    exact_kl: Callable[[Any], bool] = lambda cfg: False


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("sft", lambda x, c: sft_loss(x.logprobs, x.mask, x.num_tokens)),
        Objective(
            "psft",
            lambda x, c: psft_loss(x.logprobs, x.old_logprobs, x.mask, c.clip_low, c.clip_high, x.num_tokens),
            needs_old_policy=True,
        ),
        Objective(
            "sft_kl",
            lambda x, c: sft_kl_loss(
                x.logprobs, x.ref_logprobs, x.mask, c.kl_coef, c.kl_estimator, x.num_tokens, x.full_kl
            ),
            needs_reference=True,
            exact_kl=lambda c: c.kl_estimator == "full",
        ),
        Objective("dft", lambda x, c: dft_loss(x.logprobs, x.mask, x.num_tokens)),
        Objective(
            "iw_sft",
            lambda x, c: iw_sft_loss(
                x.logprobs, x.ref_logprobs, x.mask, (c.iw_clip_low, c.iw_clip_high), c.iw_level, x.num_tokens
            ),
            needs_reference=True,
        ),
    )
}
