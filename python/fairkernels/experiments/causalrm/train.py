"""Training of all methods of one grid cell as one batched network.

Every method gets its own 32 -> 64 -> 1 leaky-ReLU MLP (independent parameters and
initialisation), but all see the same mini-batches in the same order, so M networks train in
one batched matmul per layer.  Each method's loss is a fairkernels.torch.CausalRMLoss.  A dr
whose imputation model trains jointly (dr_jl / mrdr) gets a second network in the batch for
that model, which minimises the imputation objective while the method minimises dr.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from fairkernels.propensity import IMPUTED_ESTIMATORS
from fairkernels.torch import CausalRMLoss

from .methods import Method, methods
from .simulate import Simulation, Split


class BatchedMLP(nn.Module):
    """M independent MLPs d -> hidden -> 1 evaluated on the same input: logits [M, B].

    Network m is initialised from its own seed ``seeds[m]``, so a method's starting point does
    not depend on which other methods share the batch (``--estimators`` changes the set)."""

    def __init__(self, seeds: Sequence[int], dim: int, hidden: int) -> None:
        super().__init__()
        shapes = {"w1": ((dim, hidden), dim), "b1": ((1, hidden), dim), "w2": ((hidden, 1), hidden),
                  "b2": ((1, 1), hidden)}
        draws: dict[str, list[torch.Tensor]] = {name: [] for name in shapes}
        for seed in seeds:
            generator = torch.Generator().manual_seed(seed)
            for name, (shape, fan_in) in shapes.items():  # nn.Linear's default initialisation
                bound = 1.0 / math.sqrt(fan_in)
                draws[name].append(torch.empty(shape).uniform_(-bound, bound, generator=generator))
        self.w1, self.b1, self.w2, self.b2 = (nn.Parameter(torch.stack(draws[name])) for name in shapes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # baddbmm with the input broadcast (a view, no copy): 1.6x faster forward + backward
        # than matmul's broadcast followed by a separate bias add, at 36 networks of 512 rows.
        x_each = x.expand(self.w1.shape[0], *x.shape)
        h = torch.nn.functional.leaky_relu(torch.baddbmm(self.b1, x_each, self.w1))  # [M, B, hidden]
        return torch.baddbmm(self.b2, h, self.w2).squeeze(-1)


@dataclass
class TrainConfig:
    hidden: int = 64
    lr: float = 1e-3
    batch_size: int = 512
    max_epochs: int = 40
    patience: int = 10
    nonnegative: bool = True
    p_min: float = 0.1


@dataclass
class RowData:
    """Per-method tensors for one split: labels [M, n], observed [M, n], propensity [M, n],
    imputed logits [n] (or None)."""

    labels: torch.Tensor
    observed: torch.Tensor
    propensity: torch.Tensor
    imputed: Optional[torch.Tensor]


def row_data(ms: list[Method], split: Split, fitted_p: np.ndarray, imputed: Optional[np.ndarray]) -> RowData:
    labels, observed, propensity = [], [], []
    for m in ms:
        if m.labels == "clean":
            labels.append(split.clean)
            observed.append(np.ones_like(split.observed))
        elif m.labels == "observed":
            labels.append(split.observed.astype(np.float32))
            observed.append(np.ones_like(split.observed))
        else:
            labels.append(split.noisy)
            observed.append(split.observed)
        propensity.append(fitted_p if m.propensity == "fitted" else split.propensity)
    as_t = lambda a: torch.from_numpy(np.stack(a))  # noqa: E731
    imputed_t = torch.from_numpy(imputed.astype(np.float32)) if imputed is not None else None
    return RowData(as_t(labels).float(), as_t(observed), as_t(propensity).float(), imputed_t)


@dataclass(frozen=True)
class MethodLoss:
    """How one method is trained: its loss on its own network's logits and, for a dr whose
    imputation model trains jointly (DR-JL / MRDR), the network slot of that imputer and the
    imputation objective it minimises."""

    loss: CausalRMLoss
    imputer_slot: Optional[int] = None
    imputer_loss: Optional[CausalRMLoss] = None

    @property
    def needs_propensity(self) -> bool:
        return self.loss.options.estimator != "naive"

    @property
    def needs_imputation(self) -> bool:
        return self.loss.options.estimator in IMPUTED_ESTIMATORS


def loss_functions(ms: list[Method], rho10: float, rho01: float, config: TrainConfig) -> list[MethodLoss]:
    """One MethodLoss per method; the jointly trained imputers get the network slots after the
    methods' own, in method order."""
    out = []
    next_slot = len(ms)
    for m in ms:
        rates = (rho10, rho01) if m.noise_aware else (0.0, 0.0)
        nonnegative = "classwise" if m.correction == "classwise" else config.nonnegative
        correction = "forward" if m.correction == "forward" else "backward"
        loss = CausalRMLoss("bce", m.estimator, *rates, config.p_min, "mean", nonnegative, m.tau, m.lambda_,
                            correction)
        if m.imputer == "bce":
            out.append(MethodLoss(loss))
            continue
        # The imputation objective scores the imputed loss against the same (corrected) row loss
        # the estimator uses; it is a weighted square, so no non-negative rule.
        objective = CausalRMLoss("bce", m.imputer, *rates, config.p_min, "mean", False, correction=correction)
        out.append(MethodLoss(loss, next_slot, objective))
        next_slot += 1
    return out


def method_loss(j: int, fn: MethodLoss, logits: Sequence[torch.Tensor], rows: torch.Tensor, data: RowData,
                train_imputer: bool) -> torch.Tensor:
    """Method j's loss on ``rows`` of a split, ``logits[s]`` being slot s's logits on those
    rows (``unbind`` of the network's [slots, len(rows)] output, whose backward stacks the
    slots' gradients once, where indexing per method would add one full-size zero gradient per
    method).  A joint imputer's logits enter the estimator detached, and its objective sees the
    method's logits detached: each network descends its own objective (the alternating scheme
    of DR-JL, in one step).  ``train_imputer`` adds that objective."""
    p = data.propensity[j, rows] if fn.needs_propensity else None
    labels, observed = data.labels[j, rows], data.observed[j, rows]
    if not fn.needs_imputation:
        return fn.loss(logits[j], labels, observed, p)
    if fn.imputer_slot is None:
        assert data.imputed is not None, "a dr-family method needs the BCE imputer's logits"
        return fn.loss(logits[j], labels, observed, p, data.imputed[rows])
    imputed = logits[fn.imputer_slot]
    loss = fn.loss(logits[j], labels, observed, p, imputed.detach())
    if train_imputer:
        assert fn.imputer_loss is not None
        loss = loss + fn.imputer_loss(logits[j].detach(), labels, observed, p, imputed)
    return loss


def slot_seeds(ms: list[Method], fns: list[MethodLoss], seed: int) -> list[int]:
    """Each network's initialisation seed, from the cell's seed and the method's name (a joint
    imputer's from its method's name + "/imputer"), in slot order."""
    names = [m.name for m in ms] + [m.name + "/imputer" for m, fn in zip(ms, fns) if fn.imputer_slot is not None]
    return [(seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % 2**63 for name in names]


def train_batched(ms: list[Method], fns: list[MethodLoss], train: Split, val: Split, train_data: RowData,
                  val_data: RowData, config: TrainConfig, seed: int) -> tuple[BatchedMLP, np.ndarray]:
    """Adam on the sum of the methods' losses (each network only sees its own), with early
    stopping per method on its own risk estimate over the OBSERVED validation rows (for the
    oracle and pos_only, whose every row is "observed", all validation rows).  Returns the
    network holding each method's best parameters (a joint imputer's with its method's) and the
    epochs each method ran."""
    generator = torch.Generator().manual_seed(seed)  # the batch order, shared by all methods
    model = BatchedMLP(slot_seeds(ms, fns, seed), train.x.shape[1], config.hidden)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    x_train = torch.from_numpy(train.x)
    x_val = torch.from_numpy(val.x)
    val_rows = [torch.nonzero(val_data.observed[j]).squeeze(1) for j in range(len(ms))]
    slots_of = [[j] if fn.imputer_slot is None else [j, fn.imputer_slot] for j, fn in enumerate(fns)]
    best = [math.inf] * len(ms)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    since_best = np.zeros(len(ms), dtype=int)
    epochs = np.zeros(len(ms), dtype=int)
    n = x_train.shape[0]
    for epoch in range(config.max_epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            rows = order[start:start + config.batch_size]
            logits = model(x_train[rows]).unbind(0)
            # A method whose patience is spent keeps its saved best state: its loss no longer
            # matters, and each network's parameters (and Adam's state for them) depend on its
            # own loss only, so skipping it changes nothing for the others.
            loss = torch.stack([method_loss(j, fn, logits, rows, train_data, True) for j, fn in enumerate(fns)
                                if since_best[j] <= config.patience]).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            val_logits = model(x_val)
            state = model.state_dict()
            for j, fn in enumerate(fns):
                if since_best[j] > config.patience:
                    continue
                rows = val_rows[j]
                risk = float(method_loss(j, fn, val_logits[:, rows].unbind(0), rows, val_data, False))
                epochs[j] = epoch + 1
                if risk < best[j]:
                    best[j], since_best[j] = risk, 0
                    for k, v in state.items():
                        best_state[k][slots_of[j]] = v[slots_of[j]]
                else:
                    since_best[j] += 1
        if np.all(since_best > config.patience):
            break
    model.load_state_dict(best_state)
    return model, epochs


def metrics(logits: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """NLL and RMSE of sigmoid(f) against the clean labels, and AUROC."""
    from sklearn.metrics import roc_auc_score

    f = logits.astype(np.float64)
    nll = float(np.mean(np.logaddexp(0.0, f) - clean * f))
    prob = 1.0 / (1.0 + np.exp(-f))
    return {
        "nll": nll,
        "rmse": float(np.sqrt(np.mean((prob - clean) ** 2))),
        "auroc": float(roc_auc_score(clean, f)),
    }


def run_cell(sim: Simulation, rho10: float, rho01: float, config: TrainConfig, seed: int,
             ms: Optional[list[Method]] = None) -> list[dict]:
    """Trains the imputation model, then every method (default: all of :func:`methods`)
    together; returns one record per method."""
    from sklearn.linear_model import LogisticRegression

    ms = methods() if ms is None else ms
    # fitted propensities: logistic regression of o on x over the training pool
    x_pool = np.concatenate([sim.train.x, sim.val.x])
    o_pool = np.concatenate([sim.train.observed, sim.val.observed])
    fitted = LogisticRegression(max_iter=1000).fit(x_pool, o_pool)
    p_train = fitted.predict_proba(sim.train.x)[:, 1].astype(np.float32)
    p_val = fitted.predict_proba(sim.val.x)[:, 1].astype(np.float32)
    # imputation model for dr: the same MLP, BCE on the observed (noisy) rows
    imputer_method = [Method("imputer", "naive", False)]
    imputer_fns = loss_functions(imputer_method, 0.0, 0.0, config)
    imputer, _ = train_batched(
        imputer_method, imputer_fns, sim.train, sim.val, row_data(imputer_method, sim.train, p_train, None),
        row_data(imputer_method, sim.val, p_val, None), config, seed + 7919,
    )
    with torch.no_grad():
        g_train = imputer(torch.from_numpy(sim.train.x))[0].numpy()
        g_val = imputer(torch.from_numpy(sim.val.x))[0].numpy()
    fns = loss_functions(ms, rho10, rho01, config)
    model, epochs = train_batched(
        ms, fns, sim.train, sim.val, row_data(ms, sim.train, p_train, g_train), row_data(ms, sim.val, p_val, g_val),
        config, seed,
    )
    with torch.no_grad():
        test_logits = model(torch.from_numpy(sim.test.x)).numpy()
    records = []
    for j, m in enumerate(ms):
        records.append({"method": m.name, "epochs": int(epochs[j]), **metrics(test_logits[j], sim.test.clean)})
    return records
