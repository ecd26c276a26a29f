"""Aggregation over seeds, text tables, CSV / JSON files and plots of the CausalRM experiment."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from .. import outputs

METRICS = ("nll", "rmse", "auroc")
SETTING_KEYS = ("alpha", "rho10", "rho01", "p_min")


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
            values = [float(r[metric]) for r in rows]
            mean = sum(values) / len(values)
            var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
            entry[metric] = mean
            entry[metric + "_se"] = math.sqrt(var / len(values))
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
