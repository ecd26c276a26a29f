"""torch modules over the fairkernels kernels (``import fairkernels.torch`` needs torch).

:class:`CausalRMLoss` is a drop-in loss for reward-model training on observational feedback:
propensity weighting (naive / ips / snips / dr) plus the noise-aware correction, computed by
one fused kernel (C++ on the CPU, CUDA on the GPU) with its own backward.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

import torch
from torch import nn

from ._torch_ops import propensity_diagnostics_torch, propensity_loss_torch
from .propensity import EstimatorName, PropensityOptions

__all__ = ["CausalRMLoss"]


class CausalRMLoss(nn.Module):
    """Propensity-weighted, noise-aware loss (CausalRM: noise-aware surrogate + ips or dr).

    Args:
        base: "bce" (pointwise; logits ``[N]``) or "bt" (pairwise Bradley-Terry; logits
            ``[N, 2]`` = (first, second) response scores with label 1 meaning the first won, or
            ``[N]`` holding the difference first - second).
        estimator: "naive" (mean over observed rows), "ips" (sum w l~ / N), "snips"
            (sum w l~ / sum w), "dr" (doubly robust; needs ``imputed_logits``), with
            ``w = observed / max(propensity, p_min)``; beyond the paper "sndr", "switch_dr"
            (``tau``), "dros" (``lambda_``), "sg_ips" / "sg_dr" (``lambda_`` in [0, 1]), and the
            imputation-model objectives "dr_jl" and "mrdr" (see
            :func:`fairkernels.propensity_loss`).
        rho10: label flip rate P(noisy 1 | clean 0).
        rho01: label flip rate P(noisy 0 | clean 1) (our order is the paper's: rho10 is the
            0 -> 1 flip; some public code swaps them).  0, 0 disables the correction; needs
            1 - rho10 - rho01 > 0.
        p_min: propensities are clipped below at p_min (weights at most 1 / p_min).
        reduction: "mean" (the estimator), "sum" (unnormalised sum of row terms) or "none".
        nonnegative: True clamps the reduced loss at 0 with zero gradient when clamped (keeps a
            flexible model from driving the corrected risk negative and diverging);
            "classwise": max(0, R_1) + max(0, R_0) with nnPU's gradient rule per class
            (``beta``, ``gamma``; see :func:`fairkernels.propensity_loss`).
        correction: "backward" (the surrogate) or "forward" (Patrini et al. 2017).
        beta, gamma: the class-wise rule's parameters (defaults 0 and 1).
        tau: switch_dr's weight threshold (required by it, >= 0, may be inf).
        lambda_: dros' shrinkage (>= 0, may be inf) or sg_ips / sg_dr's parameter in [0, 1]
            (required by them).

    ``forward(logits, labels, observed, propensity=None, imputed_logits=None)``: labels are the
    noisy labels in [0, 1] (values on unobserved rows are ignored but must be in [0, 1]),
    observed is 1 where feedback was given (bool, uint8 or float), propensity is P(observed)
    in (0, 1] (not needed by "naive").  Gradients flow to ``logits`` and ``imputed_logits``.
    See :func:`fairkernels.propensity_loss` for the formulas and edge cases.
    """

    def __init__(
        self,
        base: Literal["bce", "bt", "mse"] = "bce",
        estimator: EstimatorName = "ips",
        rho10: float = 0.0,
        rho01: float = 0.0,
        p_min: float = 0.1,
        reduction: Literal["mean", "sum", "none"] = "mean",
        nonnegative: Union[bool, Literal["classwise"]] = False,
        tau: Optional[float] = None,
        lambda_: Optional[float] = None,
        correction: Literal["backward", "forward"] = "backward",
        beta: Optional[float] = None,
        gamma: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.options = PropensityOptions(base, estimator, rho10, rho01, p_min, reduction, nonnegative, tau, lambda_,
                                         correction, beta, gamma)

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        observed: torch.Tensor,
        propensity: Optional[torch.Tensor] = None,
        imputed_logits: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        return propensity_loss_torch(logits, labels, observed, propensity, imputed_logits, self.options, False)[0]

    def diagnostics(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        observed: torch.Tensor,
        propensity: Optional[torch.Tensor] = None,
        imputed_logits: Optional[torch.Tensor] = None,
    ) -> dict[str, float]:
        """ess, clipped_share, risk1, risk0 of this loss on these inputs (see
        :func:`fairkernels.propensity_loss`, ``return_diagnostics``): a forward-only kernel call,
        eager only."""
        return propensity_diagnostics_torch(logits, labels, observed, propensity, imputed_logits, self.options)

    def extra_repr(self) -> str:
        o = self.options
        return (
            f"base={o.base!r}, estimator={o.estimator!r}, rho10={o.rho10}, rho01={o.rho01}, p_min={o.p_min}, "
            f"reduction={o.reduction!r}, nonnegative={o.nonnegative!r}, correction={o.correction!r}"
            + (f", tau={o.tau}" if o.tau is not None else "")
            + (f", lambda_={o.lambda_}" if o.lambda_ is not None else "")
            + (f", beta={o.beta}, gamma={o.gamma}" if o.beta is not None else "")
        )
