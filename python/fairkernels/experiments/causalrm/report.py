"""Aggregation over seeds, text tables, CSV / JSON files and plots of the CausalRM experiment."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from .. import outputs
from .methods import BASELINES

METRICS = ("nll", "rmse", "auroc")
SETTING_KEYS = ("alpha", "rho10", "rho01", "p_min")
#: Lower is better for these metrics, higher for the others.
LOWER_IS_BETTER = ("nll", "rmse")
#: Rows shown for reference but never recommended: the oracle sees clean, fully observed
#: labels, and pos_only uses no label at all (its score comes from the observation pattern).
REFERENCES = ("oracle", "pos_only")


def mean_se(values: list[float], single: float) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation / sqrt(n)); ``single`` is the
    standard error reported for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, single
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def summarise(records: list[dict]) -> list[dict]:
    """Mean and standard error over seeds for every (setting, method)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[tuple(r[k] for k in SETTING_KEYS) + (r["method"],)].append(r)
    out = []
    for key, rows in groups.items():
        entry: dict[str, Any] = dict(zip(SETTING_KEYS + ("method",), key))
        entry["n_seeds"] = len(rows)
        for metric in METRICS + ("epochs",):
            entry[metric], entry[metric + "_se"] = mean_se([float(r[metric]) for r in rows], single=0.0)
        out.append(entry)
    return out


def write_csv(path: Path, rows: Iterable[dict]) -> None:
    rows = list(rows)
    if rows:
        outputs.write_csv_dicts(path, rows)


def write_json(path: Path, payload: dict) -> None:
    """Strict JSON (NaN and infinities written as null), atomically."""
    outputs.write_json(path, payload, indent=2)


def write_text(path: Path, text: str) -> None:
    outputs.atomic_write_text(path, text)


def noise_settings(summary: list[dict]) -> list[tuple[float, float, float]]:
    return sorted({(s["rho10"], s["rho01"], s["p_min"]) for s in summary})


def table(summary: list[dict], metric: str, methods: list[str], setting: tuple[float, float, float]) -> str:
    """Methods x alpha table of mean ± se for one noise setting (markdown)."""
    rows = [s for s in summary if (s["rho10"], s["rho01"], s["p_min"]) == setting]
    alphas = sorted({s["alpha"] for s in rows})
    cell = {(s["method"], s["alpha"]): s for s in rows}
    header = f"| {metric} | " + " | ".join(f"alpha={a:g}" for a in alphas) + " |"
    lines = [header, "|" + "---|" * (len(alphas) + 1)]
    for m in methods:
        values = []
        for a in alphas:
            s = cell.get((m, a))
            values.append(f"{s[metric]:.3f} ± {s[metric + '_se']:.3f}" if s else "")
        lines.append(f"| {m} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def all_tables(summary: list[dict], methods: list[str]) -> str:
    parts = []
    for setting in noise_settings(summary):
        rho10, rho01, p_min = setting
        parts.append(f"### rho10={rho10:g}, rho01={rho01:g}, p_min={p_min:g}\n")
        for metric in METRICS:
            parts.append(table(summary, metric, methods, setting) + "\n")
    return "\n".join(parts)


def plot(summary: list[dict], methods: list[str], metric: str, path: Path) -> None:
    """metric against alpha, one panel per noise setting, one line per method (mean ± se)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = noise_settings(summary)
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 4.5), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        rows = [s for s in summary if (s["rho10"], s["rho01"], s["p_min"]) == setting]
        colours = plt.get_cmap("tab20")
        for index, m in enumerate(methods):
            points = sorted((s["alpha"], s[metric], s[metric + "_se"]) for s in rows if s["method"] == m)
            if not points:
                continue
            style = "--" if "fitted" in m else ("-." if m in ("oracle", "pos_only") else "-")
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                        label=m, linestyle=style, marker="o", markersize=3, capsize=2, color=colours(index % 20))
        ax.set_xscale("log")
        ax.set_xlabel("alpha (1 = unbiased observation)")
        ax.set_ylabel(metric.upper())
        ax.set_title(f"rho10={setting[0]:g}, rho01={setting[1]:g}, p_min={setting[2]:g}")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    outputs.save_figure(fig, path, dpi=110)
    plt.close(fig)


def _t_quantile(n: int) -> float:
    """The two-sided 95% quantile of Student's t with n - 1 degrees of freedom (inf for n < 2)."""
    if n < 2:
        return math.inf
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


SeedValues = dict  # setting -> seed -> method -> value of one metric


def seed_values(records: list[dict], metric: str) -> SeedValues:
    """One metric's records indexed by setting, seed and method, so that the many paired
    differences of a report read the records once."""
    index: SeedValues = defaultdict(lambda: defaultdict(dict))
    for r in records:
        index[tuple(r[k] for k in SETTING_KEYS)][r["seed"]][r["method"]] = float(r[metric])
    return index


def paired(records: list[dict], method: str, baseline: str, metric: str) -> dict[tuple, dict[str, Any]]:
    """Per setting: the seed-by-seed difference metric(method) - metric(baseline) (both trained
    on the same simulated data, so the difference cancels the seed's luck): mean, standard
    error, the 95% t-interval and the seeds on which the method was better."""
    return paired_in(seed_values(records, metric), method, baseline, metric)


def paired_in(values: SeedValues, method: str, baseline: str, metric: str) -> dict[tuple, dict[str, Any]]:
    """:func:`paired` on records already indexed by :func:`seed_values` (of ``metric``)."""
    out = {}
    for setting, seeds in values.items():
        diffs = [v[method] - v[baseline] for v in seeds.values() if method in v and baseline in v]
        if not diffs:
            continue
        n = len(diffs)
        mean, se = mean_se(diffs, single=math.nan)
        half = _t_quantile(n) * se if n > 1 else math.inf
        better = sum((d < 0) if metric in LOWER_IS_BETTER else (d > 0) for d in diffs)
        out[setting] = {"diff": mean, "se": se, "low": mean - half, "high": mean + half, "better": better, "n": n}
    return out


def paired_rows(records: list[dict], methods: list[str]) -> list[dict]:
    """Every (setting, method, baseline, metric) paired difference, for paired.csv."""
    rows = []
    values = {metric: seed_values(records, metric) for metric in METRICS}
    for baseline in BASELINES:
        for method in methods:
            if method == baseline:
                continue
            for metric in METRICS:
                for setting, d in paired_in(values[metric], method, baseline, metric).items():
                    rows.append({**dict(zip(SETTING_KEYS, setting)), "method": method, "baseline": baseline,
                                 "metric": metric, **d})
    rows.sort(key=lambda r: tuple(r[k] for k in SETTING_KEYS))
    return rows


def _signed(d: dict[str, Any]) -> str:
    """A paired difference as '+0.012 ± 0.004 (4/5)': mean ± se, seeds on which it was better."""
    return f"{d['diff']:+.3f} ± {d['se']:.3f} ({d['better']}/{d['n']})"


def recommendation(records: list[dict], summary: list[dict], methods: list[str], setting: tuple,
                   metric: str = "nll") -> dict[str, Any]:
    """The method with the best mean ``metric`` in one setting among the non-reference methods,
    the methods not significantly worse than it (the 95% t-interval of their paired difference
    to it reaches 0), and its paired differences to the baselines."""
    return _recommendation(seed_values(records, metric), summary, methods, setting, metric)


def _recommendation(values: SeedValues, summary: list[dict], methods: list[str], setting: tuple,
                    metric: str) -> dict[str, Any]:
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    means = {s["method"]: s[metric] for s in summary
             if tuple(s[k] for k in SETTING_KEYS) == setting and s["method"] in methods
             and s["method"] not in REFERENCES}
    best = min(means, key=lambda m: sign * means[m])
    tied = []
    for m in means:
        if m == best:
            continue
        d = paired_in(values, m, best, metric).get(setting)
        if d is not None and (d["low"] <= 0 if sign > 0 else d["high"] >= 0):
            tied.append(m)
    against = {b: paired_in(values, best, b, metric).get(setting) for b in BASELINES if b != best and b in means}
    return {"best": best, "mean": means[best], "tied": sorted(tied, key=lambda m: sign * means[m]),
            "against": against}


def recommendations_table(records: list[dict], summary: list[dict], methods: list[str], metric: str = "nll") -> str:
    """One row per setting: the recommended method by ``metric``, its paired differences to
    naive and CausalRM-dr, and the methods statistically tied with it."""
    settings = sorted({tuple(s[k] for k in SETTING_KEYS) for s in summary})
    header = (f"| alpha | rho10, rho01 | p_min | best by {metric} | {metric} | vs naive: diff ± se (seeds better) | "
              f"vs CausalRM-dr | not significantly worse (95%, paired t) |")
    lines = [header, "|" + "---|" * 8]
    values = seed_values(records, metric)
    for setting in settings:
        rec = _recommendation(values, summary, methods, setting, metric)
        against = [(_signed(rec["against"][b]) if rec["against"].get(b) else "(is it)") for b in BASELINES]
        tied = ", ".join(rec["tied"][:6]) + (f" (+{len(rec['tied']) - 6} more)" if len(rec["tied"]) > 6 else "")
        alpha, rho10, rho01, p_min = setting
        lines.append(f"| {alpha:g} | {rho10:g}, {rho01:g} | {p_min:g} | {rec['best']} | {rec['mean']:.3f} | "
                     f"{against[0]} | {against[1]} | {tied or '-'} |")
    return "\n".join(lines)


def paired_table(records: list[dict], methods: list[str], metric: str, baseline: str,
                 setting_filter: tuple[float, float, float]) -> str:
    """Methods x alpha table of the paired difference to ``baseline`` for one noise setting."""
    alphas = sorted({r["alpha"] for r in records if (r["rho10"], r["rho01"], r["p_min"]) == setting_filter})
    lines = [f"| {metric} - {baseline} | " + " | ".join(f"alpha={a:g}" for a in alphas) + " |",
             "|" + "---|" * (len(alphas) + 1)]
    values = seed_values(records, metric)
    for m in methods:
        if m == baseline:
            continue
        d = paired_in(values, m, baseline, metric)
        cells = [_signed(d[(a, *setting_filter)]) if (a, *setting_filter) in d else "" for a in alphas]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_report(records: list[dict], summary: list[dict], methods: list[str]) -> str:
    """recommendations.md: the recommendation per setting (by NLL, the primary metric, and by
    AUROC), then the paired differences of every method to each baseline."""
    parts = ["## Which estimator to use: recommendation per setting\n",
             "Best mean over seeds among the trained methods (oracle and pos_only excluded); a paired "
             "difference is method - baseline on the same seed's data: mean ± standard error (seeds on "
             "which the method was better).\n",
             "### By NLL (calibration, the primary metric)\n", recommendations_table(records, summary, methods, "nll"),
             "\n### By AUROC (ranking)\n", recommendations_table(records, summary, methods, "auroc"), ""]
    for setting in noise_settings(summary):
        rho10, rho01, p_min = setting
        parts.append(f"## Paired differences, rho10={rho10:g}, rho01={rho01:g}, p_min={p_min:g}\n")
        for metric in ("nll", "auroc"):
            for baseline in BASELINES:
                parts.append(paired_table(records, methods, metric, baseline, setting) + "\n")
    return "\n".join(parts)
