"""fairkernels: fast, exact kernels for learning under feedback loops and bias.

* :func:`group_advantages`: GRPO / RLOO / Dr. GRPO advantages with unlikeliness rank
  reweighting, sequence- or token-level (C++ and CUDA kernels).
* :mod:`fairkernels.bandits`: grid confidence bounds and Optimistic Feasible Search (OFS, UCB,
  PrimalDual, FixedThreshold) for fair threshold decisions, with fused closed-loop episodes.
* :class:`OnlineThresholdOptimizer`: fair thresholds (one per group) learned online with OFS
  from one-sided feedback, in fairlearn's conventions (``sensitive_features``, ``random_state``).
* :func:`propensity_loss`: propensity-weighted (naive / ips / snips / dr), noise-aware losses
  for reward models trained on observational feedback (CausalRM); torch users:
  ``fairkernels.torch.CausalRMLoss``.

numpy arrays and CPU torch tensors run on the C++ core; CUDA torch tensors and CuPy arrays on
the CUDA core, on the caller's current stream.  See README.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import bandits
from ._backend import CudaUnavailableError, build_info, cuda_available, cuda_compiled
from .advantage import group_advantages
from .bandits import OFS, UCB, FixedThreshold, GridBounds, PrimalDual
from .online import OnlineThresholdOptimizer
from .propensity import propensity_loss

__all__ = [
    "OFS",
    "UCB",
    "CudaUnavailableError",
    "FixedThreshold",
    "GridBounds",
    "OnlineThresholdOptimizer",
    "PrimalDual",
    "__version__",
    "bandits",
    "build_info",
    "cuda_available",
    "cuda_compiled",
    "group_advantages",
    "propensity_loss",
]
