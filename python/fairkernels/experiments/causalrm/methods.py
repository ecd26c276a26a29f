"""The methods the CausalRM experiment compares, and the choices of its --estimators flag.

Kept free of torch so that the command line parses without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

#: The estimators of the paper and, beyond it, the off-policy family (spec: "Beyond the paper").
PAPER_ESTIMATORS = ("naive", "ips", "snips", "dr")
NEW_ESTIMATORS = ("sndr", "switch_dr", "dros", "sg_ips", "sg_dr")
#: Objectives the imputation model of dr can be trained with instead of BCE on observed rows.
IMPUTER_OBJECTIVES = ("dr_jl", "mrdr")
#: What --estimators accepts: an estimator, or an imputation objective (dr with that imputer).
ESTIMATOR_CHOICES = PAPER_ESTIMATORS + NEW_ESTIMATORS + IMPUTER_OBJECTIVES
#: Noise corrections beside the paper's backward surrogate, applied to CausalRM-dr.
EXTRA_CORRECTIONS = ("forward", "classwise")
#: A priori hyper-parameters (not tuned on these data): each halves the largest weight,
#: 1 / p_min = 10, at p_min = 0.1 -- switch_dr drops rows with w > 5, dros' lambda w / (w^2 +
#: lambda) gives 10 -> 5 at lambda = 100 and sg's w / (1 - lambda + lambda w) 10 -> 5.3 at 0.1.
DEFAULT_TAU = (5.0,)
DEFAULT_DROS_LAMBDA = (100.0,)
DEFAULT_SG_LAMBDA = (0.1,)
#: The baselines of the paired comparisons: always trained, whatever --estimators says.
BASELINES = ("naive", "CausalRM-dr")


@dataclass(frozen=True)
class Method:
    name: str
    estimator: str          # an estimator of fairkernels.propensity_loss
    noise_aware: bool       # use the true flip rates in the correction
    propensity: Optional[str] = None  # "true" | "fitted" | None
    labels: str = "noisy"   # "noisy" | "clean" (oracle) | "observed" (pos_only: label = o)
    correction: str = "backward"  # "backward" (the paper's surrogate) | "forward" | "classwise"
    tau: Optional[float] = None
    lambda_: Optional[float] = None
    imputer: str = "bce"    # "bce" (trained first, fixed) | "dr_jl" | "mrdr" (trained jointly)


def _new_estimator_methods(kind: str, suffix: str, estimators: Sequence[str], tau: Sequence[float],
                           dros_lambda: Sequence[float], sg_lambda: Sequence[float]) -> list[Method]:
    """CausalRM-<estimator> for the off-policy family: the paper's noise-aware surrogate with
    each new weighting, one method per hyper-parameter value."""
    # estimator -> (the name's label, the Method field, the values)
    hyper = {"switch_dr": ("tau", "tau", tau), "dros": ("lambda", "lambda_", dros_lambda),
             "sg_ips": ("lambda", "lambda_", sg_lambda), "sg_dr": ("lambda", "lambda_", sg_lambda)}
    out = []
    for est in NEW_ESTIMATORS:
        if est not in estimators:
            continue
        if est not in hyper:
            out.append(Method(f"CausalRM-{est}{suffix}", est, True, kind))
            continue
        label, name, values = hyper[est]
        out += [Method(f"CausalRM-{est}({label}={v:g}){suffix}", est, True, kind, **{name: v}) for v in values]
    return out


def methods(estimators: Optional[Sequence[str]] = None, tau: Sequence[float] = DEFAULT_TAU,
            dros_lambda: Sequence[float] = DEFAULT_DROS_LAMBDA, sg_lambda: Sequence[float] = DEFAULT_SG_LAMBDA,
            corrections: Sequence[str] = EXTRA_CORRECTIONS) -> list[Method]:
    """The methods of one cell, in table order.  ``estimators`` (default: all of
    ESTIMATOR_CHOICES) picks the estimator families; naive and CausalRM-dr (the paired
    comparisons' baselines), oracle and pos_only are always there.  ``corrections`` (of
    EXTRA_CORRECTIONS) adds CausalRM-dr with the forward / the class-wise non-negative
    correction."""
    chosen = tuple(ESTIMATOR_CHOICES) if estimators is None else tuple(estimators)
    unknown = [e for e in chosen if e not in ESTIMATOR_CHOICES]
    if unknown:
        raise ValueError(f"estimators: unknown {unknown}; choose from {list(ESTIMATOR_CHOICES)}")
    if any(c not in EXTRA_CORRECTIONS for c in corrections):
        raise ValueError(f"corrections: choose from {list(EXTRA_CORRECTIONS)}, got {list(corrections)}")
    out = [Method("naive", "naive", False)]
    if "naive" in chosen:
        out.append(Method("noise-aware", "naive", True))
    for kind, suffix in (("true", ""), ("fitted", " (fitted p)")):
        out += [Method(name + suffix, est, False, kind) for name, est in (("ips", "ips"), ("snips", "snips"),
                                                                         ("dr", "dr")) if est in chosen]
        if "ips" in chosen:
            out.append(Method("CausalRM-ips" + suffix, "ips", True, kind))
        out.append(Method("CausalRM-dr" + suffix, "dr", True, kind))
        out += [Method(f"CausalRM-dr[{c}]{suffix}", "dr", True, kind, correction=c)
                for c in EXTRA_CORRECTIONS if c in corrections]
        out += [Method(f"CausalRM-dr[{obj} imputer]{suffix}", "dr", True, kind, imputer=obj)
                for obj in IMPUTER_OBJECTIVES if obj in chosen]
        out += _new_estimator_methods(kind, suffix, chosen, tau, dros_lambda, sg_lambda)
    out += [Method("oracle", "naive", False, None, "clean"), Method("pos_only", "naive", False, None, "observed")]
    return out


def is_paper_method(m: Method) -> bool:
    """The paper's methods and the references: its estimators, the backward surrogate, the
    BCE-trained imputer."""
    return m.estimator in PAPER_ESTIMATORS and m.correction == "backward" and m.imputer == "bce"


def split_for_plots(ms: Sequence[Method]) -> tuple[list[str], list[str]]:
    """Names of the paper's methods, and of the baselines plus the methods beyond the paper
    with true propensities."""
    paper = [m.name for m in ms if is_paper_method(m)]
    beyond = list(BASELINES) + [m.name for m in ms if not is_paper_method(m) and m.propensity == "true"]
    return paper, beyond
