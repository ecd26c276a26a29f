"""Shared recipe of the data-based environments: a logistic-regression score model trained on a
split stratified by group x label, and the held-out pool turned into an environment table."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from ..bandits import EnvTable, make_grid
from ..datasets import Table


def split_pool(table: Table, split_seed: int, train_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, pool), stratified by group x label."""
    from sklearn.model_selection import train_test_split

    strata = table.group * 2 + table.label
    index = np.arange(len(table))
    train, pool = train_test_split(index, train_size=train_fraction, stratify=strata, random_state=split_seed)
    return np.sort(train), np.sort(pool)


def fit_scores(table: Table, train: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """P(y = 1 | x) on the pool from a logistic regression (one-hot categoricals, standardised
    numerics) fitted on the training rows; the group is not a feature."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    p, q = table.numeric.shape[1], table.categorical.shape[1]
    features = np.concatenate([table.numeric.astype(object), table.categorical.astype(object)], axis=1)
    model = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), list(range(p))),
                           ("cat", OneHotEncoder(handle_unknown="ignore"), list(range(p, p + q)))]),
        LogisticRegression(max_iter=2000),
    )
    model.fit(features[train], table.label[train])
    return model.predict_proba(features[pool])[:, 1]


def table_from_pool(scores: np.ndarray, label: np.ndarray, group: np.ndarray, grid: Union[int, Sequence[float]], *,
                    name: str, p0: Optional[float] = None, **options) -> EnvTable:
    """Empirical acceptance rates of the pool: tpr[g, k] = P(s >= tau_k | y=1, g) etc.; p0 defaults
    to the pool's share of group a."""
    tau = make_grid(grid)
    tpr = np.zeros((2, tau.size))
    fpr = np.zeros((2, tau.size))
    base = np.zeros(2)
    for g in (0, 1):
        in_g = group == g
        if not np.any(in_g & (label == 1)) or not np.any(in_g & (label == 0)):
            raise ValueError(f"{name}: group {'ab'[g]} of the pool lacks one of the labels")
        base[g] = label[in_g].mean()
        pos, neg = scores[in_g & (label == 1)], scores[in_g & (label == 0)]
        tpr[g] = (pos[None, :] >= tau[:, None]).mean(axis=1)
        fpr[g] = (neg[None, :] >= tau[:, None]).mean(axis=1)
    share = float(np.mean(group == 0)) if p0 is None else p0
    return EnvTable(tau, tpr, fpr, base, p0=share, name=name, **options)
