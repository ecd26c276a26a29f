"""Fair thresholds learned online on COMPAS, one batch of defendants at a time.

A logistic regression (scikit-learn; race is not a feature) scores P(no recidivism in two
years) and is trained on half of the ProPublica data; the other half is the pool from which
each round's batch is drawn.  Every round the estimator decides (accept = favourable decision),
then sees the outcome of the accepted rows only and learns from it.  Data: the COMPAS CSV via
``fairkernels.datasets`` (set FAIRKERNELS_DATA_DIR to a folder holding it).

    FAIRKERNELS_DATA_DIR=/path/to/datasets python examples/online_compas.py
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from fairkernels import OnlineThresholdOptimizer
from fairkernels.datasets import load_compas

RACE = np.array(["Caucasian", "African-American"])  # group a, group b of fairkernels.datasets


def scored_pool(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, race, label) of the held-out half, scored by a model fitted on the other half."""
    table = load_compas()
    features = np.concatenate([table.numeric.astype(object), table.categorical.astype(object)], axis=1)
    p = table.numeric.shape[1]
    train, pool = train_test_split(np.arange(len(table)), train_size=0.5, random_state=seed,
                                   stratify=table.group * 2 + table.label)
    model = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), list(range(p))),
                           ("cat", OneHotEncoder(handle_unknown="ignore"), list(range(p, features.shape[1])))]),
        LogisticRegression(max_iter=2000))
    model.fit(features[train], table.label[train])
    return model.predict_proba(features[pool])[:, 1], RACE[table.group[pool]], table.label[pool].astype(float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=500, help="defendants per round")
    parser.add_argument("--tol", type=float, default=0.05, help="allowed gap in acceptance rates")
    parser.add_argument("--grid", type=int, default=21, help="thresholds per group")
    parser.add_argument("--shared", action="store_true", help="one threshold for both groups")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    scores, race, label = scored_pool(args.seed)
    rng = np.random.default_rng(args.seed)
    est = OnlineThresholdOptimizer(tol=args.tol, per_group=not args.shared, grid=args.grid, groups=list(RACE))
    for t in range(args.rounds):
        rows = rng.integers(0, scores.size, args.batch)  # this round's defendants
        s, g = scores[rows], race[rows]
        decisions = est.predict(s, sensitive_features=g)
        observed = np.where(decisions == 1, label[rows], np.nan)  # outcomes of the accepted only
        est.partial_fit(s, decisions, observed, sensitive_features=g)
        if (t + 1) % max(1, args.rounds // 10) == 0:
            recent = est.history_[-max(1, args.rounds // 10):]
            print(f"round {t + 1:5d}: thresholds "
                  + ", ".join(f"{k} {v:.2f}" for k, v in est.thresholds_.items())
                  + f" | last {len(recent)} rounds: reward {np.mean([h['reward'] for h in recent]):.4f}, "
                  f"DP residual {np.mean([h['residual'] for h in recent]):+.4f}")
    last = est.history_[-args.rounds // 5:]
    print(f"last 20% of rounds: mean reward {np.mean([h['reward'] for h in last]):.4f}, mean residual "
          f"{np.mean([h['residual'] for h in last]):+.4f} (feasible iff <= 0), share of rounds violating "
          f"{np.mean([h['residual'] > 0 for h in last]):.2f}")


if __name__ == "__main__":
    main()
