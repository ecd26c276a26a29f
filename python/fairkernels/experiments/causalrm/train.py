"""Training of all methods of one grid cell as one batched network.

Every method gets its own 32 -> 64 -> 1 leaky-ReLU MLP (independent parameters and
initialisation), but all see the same mini-batches in the same order, so M networks train in
one batched matmul per layer.  Each method's loss is a fairkernels.torch.CausalRMLoss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from fairkernels.torch import CausalRMLoss

from .simulate import Simulation, Split


@dataclass(frozen=True)
class Method:
    name: str
    estimator: str          # naive | ips | snips | dr
    noise_aware: bool       # use the true flip rates in the surrogate
    propensity: Optional[str] = None  # "true" | "fitted" | None
    labels: str = "noisy"   # "noisy" | "clean" (oracle) | "observed" (pos_only: label = o)


def methods() -> list[Method]:
    out = [Method("naive", "naive", False), Method("noise-aware", "naive", True)]
    for kind, suffix in (("true", ""), ("fitted", " (fitted p)")):
        out += [
            Method("ips" + suffix, "ips", False, kind),
            Method("snips" + suffix, "snips", False, kind),
            Method("dr" + suffix, "dr", False, kind),
            Method("CausalRM-ips" + suffix, "ips", True, kind),
            Method("CausalRM-dr" + suffix, "dr", True, kind),
        ]
    out += [Method("oracle", "naive", False, None, "clean"), Method("pos_only", "naive", False, None, "observed")]
    return out


class BatchedMLP(nn.Module):
    """M independent MLPs d -> hidden -> 1 evaluated on the same input: logits [M, B]."""

    def __init__(self, n_models: int, dim: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()

        def uniform(shape, fan_in):  # nn.Linear's default initialisation
            bound = 1.0 / math.sqrt(fan_in)
            return nn.Parameter(torch.empty(shape).uniform_(-bound, bound, generator=generator))

        self.w1 = uniform((n_models, dim, hidden), dim)
        self.b1 = uniform((n_models, 1, hidden), dim)
        self.w2 = uniform((n_models, hidden, 1), hidden)
        self.b2 = uniform((n_models, 1, 1), hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.leaky_relu(torch.matmul(x, self.w1) + self.b1)  # [M, B, hidden]
        return (torch.bmm(h, self.w2) + self.b2).squeeze(-1)


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


def loss_functions(ms: list[Method], rho10: float, rho01: float, config: TrainConfig) -> list[CausalRMLoss]:
    return [
        CausalRMLoss("bce", m.estimator, rho10 if m.noise_aware else 0.0, rho01 if m.noise_aware else 0.0,
                     config.p_min, "mean", config.nonnegative)
        for m in ms
    ]


def _losses(logits: torch.Tensor, rows: torch.Tensor, data: RowData, fns: list[CausalRMLoss]) -> list[torch.Tensor]:
    out = []
    for j, fn in enumerate(fns):
        p = data.propensity[j, rows] if fn.options.estimator != "naive" else None
        h = data.imputed[rows] if fn.options.estimator == "dr" else None
        out.append(fn(logits[j], data.labels[j, rows], data.observed[j, rows], p, h))
    return out


def train_batched(ms: list[Method], fns: list[CausalRMLoss], train: Split, val: Split, train_data: RowData,
                  val_data: RowData, config: TrainConfig, seed: int) -> tuple[BatchedMLP, np.ndarray]:
    """Adam on the sum of the methods' losses (each network only sees its own), with early
    stopping per method on its own risk estimate over the OBSERVED validation rows (for the
    oracle and pos_only, whose every row is "observed", all validation rows).  Returns the
    network holding each method's best parameters and the epochs each method ran."""
    generator = torch.Generator().manual_seed(seed)
    model = BatchedMLP(len(ms), train.x.shape[1], config.hidden, generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    x_train = torch.from_numpy(train.x)
    x_val = torch.from_numpy(val.x)
    val_rows = [torch.nonzero(val_data.observed[j]).squeeze(1) for j in range(len(ms))]
    best = [math.inf] * len(ms)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    since_best = np.zeros(len(ms), dtype=int)
    epochs = np.zeros(len(ms), dtype=int)
    n = x_train.shape[0]
    for epoch in range(config.max_epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            rows = order[start:start + config.batch_size]
            logits = model(x_train[rows])
            loss = torch.stack(_losses(logits, rows, train_data, fns)).sum()
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
                risk = float(_losses(val_logits[j:j + 1, rows], rows, _select(val_data, j), [fn])[0])
                epochs[j] = epoch + 1
                if risk < best[j]:
                    best[j], since_best[j] = risk, 0
                    for k, v in state.items():
                        best_state[k][j] = v[j]
                else:
                    since_best[j] += 1
        if np.all(since_best > config.patience):
            break
    model.load_state_dict(best_state)
    return model, epochs


def _select(data: RowData, j: int) -> RowData:
    """The j-th method's rows as a one-method RowData (for the validation risk)."""
    return RowData(data.labels[j:j + 1], data.observed[j:j + 1], data.propensity[j:j + 1], data.imputed)


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


def run_cell(sim: Simulation, rho10: float, rho01: float, config: TrainConfig, seed: int) -> list[dict]:
    """Trains the imputation model, then every method together; returns one record per method."""
    from sklearn.linear_model import LogisticRegression

    ms = methods()
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
