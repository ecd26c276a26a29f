"""Experiment driver: fit base policies, run the RL arms, evaluate pass@N, write the results.

Every policy is evaluated with ``eval_samples`` samples per problem on the held-out problems
(hard ones, which only the rare style solves, and medium ones) and on the training problems,
separately.  pass@N uses the unbiased estimator; arms are summarised by mean and standard error
over seeds.  Outputs (CSV, JSON with the full configuration, PNG) go to ``out_dir``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import multiprocessing as mp
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import fairkernels

from .passk import pass_at_k
from .policy import ProofPolicy
from .tasks import DOUBLE, Problem, ProblemSets, TaskConfig, batch_verify, generate_problems
from .train import ARMS, FitConfig, GRPOConfig, fit_base, train_grpo

#: Evaluation sets reported (the held-out set is hard + medium).
EVAL_SETS: tuple[str, ...] = ("heldout", "heldout_hard", "heldout_medium", "train")
DEFAULT_KS: tuple[int, ...] = (1, 4, 16, 64, 256)


#: Named base-policy designs (task rare style + fitting set), see docs/results/grpo.md.
#: "reliable_rare" (default): the rare style is "*2 first, then additive steps", chosen by the
#: base in ~9% of samples but continued reliably (rare_continuation_weight), with little
#: coverage of it on hard problems.  "plain": the rare style is any proof using *2, fitted by
#: plain maximum likelihood (the base rarely picks it and is mostly wrong when it does).
VARIANTS: dict[str, tuple[TaskConfig, FitConfig]] = {
    "reliable_rare": (TaskConfig(), FitConfig()),
    "plain": (TaskConfig(rare_style="any_doubling"),
              FitConfig(p_doubling=0.05, p_rare_hard=0.15, rare_continuation_weight=1.0,
                        epochs=8)),
}


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one experiment run (written to the JSON output)."""

    task: TaskConfig = field(default_factory=TaskConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    arms: tuple[str, ...] = ("base", "grpo", "unlikeliness", "grpo_2epochs", "passk")
    rl_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    base_seeds: tuple[int, ...] = (0, 1)
    eval_samples: int = 1024
    ks: tuple[int, ...] = DEFAULT_KS
    eval_group: int = 32
    workers: int = 2
    variant: str = "reliable_rare"

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"arms must be a non-empty subset of {sorted(ARMS)}, got {self.arms}")
        if not self.base_seeds:
            raise ValueError("base_seeds must not be empty")
        if any(a != "base" for a in self.arms) and not self.rl_seeds:
            raise ValueError("rl_seeds must not be empty when an RL arm is run")
        if self.eval_samples < max(self.ks):
            raise ValueError(f"eval_samples ({self.eval_samples}) must be >= max(ks) ({max(self.ks)})")
        if self.eval_samples % self.eval_group:
            raise ValueError("eval_samples must be a multiple of eval_group")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    def arm_grpo(self, arm: str) -> GRPOConfig:
        """The GRPO configuration of an RL arm (beta_rank, PPO epochs and pass_k set by the arm)."""
        spec = ARMS[arm]
        if spec is None:
            raise ValueError(f"arm {arm!r} has no RL")
        beta, epochs, pass_k = spec
        return replace(self.grpo, beta_rank=beta, ppo_epochs=epochs, pass_k=pass_k)

    def base_seed_for(self, rl_seed_index: int) -> int:
        """RL seeds cycle over the base seeds, so every base is trained from."""
        return self.base_seeds[rl_seed_index % len(self.base_seeds)]


def variant_config(variant: str = "reliable_rare", workers: int = 2) -> ExperimentConfig:
    """The full configuration of a named variant (see :data:`VARIANTS`)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    task, fit = VARIANTS[variant]
    return ExperimentConfig(task=task, fit=fit, workers=workers, variant=variant)


def quick_config(workers: int = 2, variant: str = "reliable_rare") -> ExperimentConfig:
    """A small configuration that runs every arm in well under 2 minutes (smoke runs)."""
    cfg = variant_config(variant, workers)
    return replace(cfg, task=replace(cfg.task, n_heldout_hard=60, n_heldout_medium=20,
                                     n_train=40),
                   fit=replace(cfg.fit, n_per_medium=24, n_per_hard=6, epochs=4),
                   grpo=GRPOConfig(steps=40), rl_seeds=(0, 1), base_seeds=(0,),
                   eval_samples=256)


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """JSON-able dict of the configuration."""
    return asdict(cfg)


# ----------------------------------------------------------------------------- evaluation

def evaluate(policy: ProofPolicy, problems: list[Problem], n_samples: int, seed: int,
             group: int = 32, chunk: int = 65536) -> dict[str, np.ndarray]:
    """Sample ``n_samples`` proofs per problem; per-problem counts and diversity.

    Returns arrays over problems: ``correct`` (#correct), ``distinct`` (#distinct correct
    proofs), ``signal`` (share of the ``n_samples / group`` groups of ``group`` consecutive
    samples whose rewards are not all equal), ``distinct_group`` (mean #distinct correct proofs
    per group, over groups with >= 1 correct; NaN if none) and ``rare`` (#correct proofs that
    use the rare style).
    """
    gen = torch.Generator().manual_seed(seed)
    per_chunk = max(1, chunk // n_samples)
    out: dict[str, list[float]] = {k: [] for k in
                                   ("correct", "distinct", "signal", "distinct_group", "rare")}
    policy.eval()
    for i in range(0, len(problems), per_chunk):
        probs = problems[i:i + per_chunk]
        starts = torch.tensor([p.start for p in probs]).repeat_interleave(n_samples)
        deltas = torch.tensor([p.delta for p in probs]).repeat_interleave(n_samples)
        tokens = policy.sample(starts, deltas, generator=gen).tokens.numpy()
        ok = batch_verify(starts.numpy(), (starts + deltas).numpy(), tokens)
        for j in range(len(probs)):
            sl = slice(j * n_samples, (j + 1) * n_samples)
            tok_j, ok_j = tokens[sl], ok[sl]
            out["correct"].append(int(ok_j.sum()))
            out["distinct"].append(len({r.tobytes() for r in tok_j[ok_j]}))
            out["rare"].append(int(np.any(tok_j[ok_j] == DOUBLE, axis=1).sum()))
            g_ok = ok_j.reshape(-1, group)
            n_ok = g_ok.sum(1)
            out["signal"].append(float(np.mean((n_ok > 0) & (n_ok < group))))
            g_tok = tok_j.reshape(-1, group, tok_j.shape[1])
            dg = [len({r.tobytes() for r in g_tok[g][g_ok[g]]}) for g in range(len(g_ok))
                  if n_ok[g] > 0]
            out["distinct_group"].append(float(np.mean(dg)) if dg else float("nan"))
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def eval_sets(problems: ProblemSets) -> dict[str, list[Problem]]:
    """The problem lists of :data:`EVAL_SETS`."""
    hard = [p for p in problems.heldout if problems.category[p] == "hard"]
    medium = [p for p in problems.heldout if problems.category[p] == "medium"]
    return {"heldout": hard + medium, "heldout_hard": hard, "heldout_medium": medium,
            "train": list(problems.train)}


def summarise_eval(ev: dict[str, np.ndarray], n: int, ks: tuple[int, ...]) -> dict[str, float]:
    """Mean over problems of pass@k and of the diversity measures."""
    out = {f"pass@{k}": float(np.mean([pass_at_k(n, int(c), k) for c in ev["correct"]]))
           for k in ks}
    out["signal_share"] = float(np.mean(ev["signal"]))
    dg = ev["distinct_group"][~np.isnan(ev["distinct_group"])]
    out["distinct_correct_per_group"] = float(np.mean(dg)) if dg.size else float("nan")
    out["distinct_correct_per_problem"] = float(np.mean(ev["distinct"]))
    n_ok = ev["correct"].sum()
    out["rare_share_of_correct"] = float(ev["rare"].sum() / n_ok) if n_ok else float("nan")
    return out


# ----------------------------------------------------------------------------- jobs

def _init_worker() -> None:
    torch.set_num_threads(1)


def _job_fit(cfg: ExperimentConfig, base_seed: int) -> tuple[int, dict[str, torch.Tensor], float]:
    t0 = time.perf_counter()
    problems = generate_problems(cfg.task)
    policy = fit_base(problems, cfg.task, cfg.fit, seed=base_seed)
    return base_seed, policy.state_dict(), time.perf_counter() - t0


def _new_policy(cfg: ExperimentConfig, state: dict[str, torch.Tensor]) -> ProofPolicy:
    policy = ProofPolicy(cfg.task.max_start, cfg.task.max_delta, cfg.task.max_len,
                         hidden=cfg.fit.hidden)
    policy.load_state_dict(state)
    return policy


def _job_arm(args: tuple[ExperimentConfig, str, int, int, dict[str, torch.Tensor]]
             ) -> dict[str, Any]:
    """Train (unless base) and evaluate one (arm, seed)."""
    cfg, arm, seed, base_seed, state = args
    t0 = time.perf_counter()
    problems = generate_problems(cfg.task)
    policy = _new_policy(cfg, state)
    train_summary: dict[str, float] = {}
    if arm != "base":
        policy, log = train_grpo(policy, problems.train, cfg.arm_grpo(arm), seed=1000 + seed)
        train_summary = log.summary()
    t_train = time.perf_counter() - t0
    metrics = {}
    sets = eval_sets(problems)
    for name in ("heldout_hard", "heldout_medium", "train"):
        # a fixed evaluation seed per set and seed index: independent of the arm
        metrics[name] = evaluate(policy, sets[name], cfg.eval_samples,
                                 seed=77_000 + 10 * seed + EVAL_SETS.index(name),
                                 group=cfg.eval_group)
    metrics["heldout"] = {k: np.concatenate([metrics["heldout_hard"][k],
                                             metrics["heldout_medium"][k]])
                          for k in metrics["heldout_hard"]}
    return {
        "arm": arm, "seed": seed, "base_seed": base_seed,
        "metrics": {s: summarise_eval(metrics[s], cfg.eval_samples, cfg.ks) for s in EVAL_SETS},
        "correct_counts": {s: metrics[s]["correct"].astype(int).tolist() for s in EVAL_SETS},
        "train_log": train_summary,
        "seconds": {"train": t_train, "total": time.perf_counter() - t0},
    }


def _map(fn: Callable, jobs: list, workers: int, desc: str, quiet: bool) -> list:
    """Run jobs in a spawn pool (or in-process for one worker) with a tqdm bar."""
    from tqdm import tqdm
    bar = tqdm(total=len(jobs), desc=desc, disable=quiet, unit="job")
    results = []
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            results.append(fn(job))
            bar.update()
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker) as pool:
            for res in pool.imap_unordered(fn, jobs):
                results.append(res)
                bar.update()
    bar.close()
    return results


def _fit_star(args: tuple[ExperimentConfig, int]) -> tuple[int, dict[str, torch.Tensor], float]:
    return _job_fit(*args)


# ----------------------------------------------------------------------------- summary / output

def aggregate(runs: list[dict[str, Any]], cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """Mean and standard error over seeds per (arm, set, metric)."""
    rows = []
    for arm in cfg.arms:
        arm_runs = [r for r in runs if r["arm"] == arm]
        for s in EVAL_SETS:
            for metric in arm_runs[0]["metrics"][s]:
                vals = np.array([r["metrics"][s][metric] for r in arm_runs], dtype=float)
                vals = vals[~np.isnan(vals)]
                n = len(vals)
                se = float(vals.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
                rows.append({"arm": arm, "set": s, "metric": metric, "n_seeds": n,
                             "mean": float(vals.mean()) if n else float("nan"), "se": se})
    return rows


def format_tables(summary: list[dict[str, Any]], cfg: ExperimentConfig) -> str:
    """Markdown tables of pass@N (mean ± s.e.) per arm, one per evaluation set, and diversity."""
    look = {(r["arm"], r["set"], r["metric"]): r for r in summary}
    lines: list[str] = []
    for s in EVAL_SETS:
        lines.append(f"\n{s}: pass@N, mean ± s.e. over seeds (percent)\n")
        lines.append("| arm | seeds | " + " | ".join(f"pass@{k}" for k in cfg.ks) + " |")
        lines.append("|---|---|" + "---|" * len(cfg.ks))
        for arm in cfg.arms:
            cells = []
            for k in cfg.ks:
                r = look[(arm, s, f"pass@{k}")]
                cells.append(f"{100 * r['mean']:.1f} ± {100 * r['se']:.1f}")
            lines.append(f"| {arm} | {look[(arm, s, 'pass@1')]['n_seeds']} | "
                         + " | ".join(cells) + " |")
    lines.append("\ndiversity on training problems (groups of "
                 f"{cfg.eval_group} of the evaluation samples), mean ± s.e.\n")
    metrics = ("signal_share", "distinct_correct_per_group", "distinct_correct_per_problem",
               "rare_share_of_correct")
    lines.append("| arm | " + " | ".join(metrics) + " |")
    lines.append("|---|" + "---|" * len(metrics))
    for arm in cfg.arms:
        cells = [f"{look[(arm, 'train', m)]['mean']:.3f} ± {look[(arm, 'train', m)]['se']:.3f}"
                 for m in metrics]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: list[dict[str, Any]], cfg: ExperimentConfig, path: Path) -> None:
    """PNG of pass@N against N per arm, one panel per evaluation set."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    look = {(r["arm"], r["set"], r["metric"]): r for r in summary}
    fig, axes = plt.subplots(1, len(EVAL_SETS), figsize=(4.2 * len(EVAL_SETS), 3.8))
    for ax, s in zip(axes, EVAL_SETS):
        for arm in cfg.arms:
            m = np.array([look[(arm, s, f"pass@{k}")]["mean"] for k in cfg.ks])
            e = np.nan_to_num(np.array([look[(arm, s, f"pass@{k}")]["se"] for k in cfg.ks]))
            ax.errorbar(cfg.ks, m, yerr=e, marker="o", capsize=3, label=arm)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(cfg.ks))
        ax.set_xticklabels([str(k) for k in cfg.ks])
        ax.set_xlabel("N")
        ax.set_title(s)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("pass@N")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out_dir: Path, cfg: ExperimentConfig, runs: list[dict[str, Any]],
                  summary: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Path]:
    """Write runs.csv, summary.csv, results.json and passk.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"runs_csv": out_dir / "runs.csv", "summary_csv": out_dir / "summary.csv",
             "json": out_dir / "results.json", "png": out_dir / "passk.png"}
    metric_names = list(runs[0]["metrics"]["train"])
    with open(paths["runs_csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seed", "base_seed", "set"] + metric_names)
        for r in sorted(runs, key=lambda r: (cfg.arms.index(r["arm"]), r["seed"])):
            for s in EVAL_SETS:
                w.writerow([r["arm"], r["seed"], r["base_seed"], s]
                           + [r["metrics"][s][m] for m in metric_names])
    with open(paths["summary_csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["arm", "set", "metric", "n_seeds", "mean", "se"])
        w.writeheader()
        w.writerows(summary)
    doc = {"fairkernels_version": fairkernels.__version__, "config": config_to_dict(cfg),
           "summary": summary, "runs": runs, **extra}
    paths["json"].write_text(json.dumps(doc, indent=1, default=float))
    plot(summary, cfg, paths["png"])
    return paths


def default_out_dir() -> Path:
    """A new folder under ./runs/ named by the time of the run."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"grpo-{stamp}"
    i = 1
    while path.exists():
        path = Path("runs") / f"grpo-{stamp}-{i}"
        i += 1
    return path


def run_experiment(cfg: ExperimentConfig, out_dir: Path | None = None,
                   quiet: bool = False) -> dict[str, Any]:
    """Fit the bases, run every (arm, seed), evaluate, print tables and write the outputs."""
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir()
    fits = _map(_fit_star, [(cfg, s) for s in cfg.base_seeds], cfg.workers, "fit base", quiet)
    states = {seed: state for seed, state, _ in fits}
    jobs = []
    for arm in cfg.arms:
        if arm == "base":
            jobs += [(cfg, arm, s, s, states[s]) for s in cfg.base_seeds]
        else:
            jobs += [(cfg, arm, s, cfg.base_seed_for(i), states[cfg.base_seed_for(i)])
                     for i, s in enumerate(cfg.rl_seeds)]
    # longest jobs first so the pool ends together
    jobs.sort(key=lambda j: 0 if j[1] == "base" else -cfg.arm_grpo(j[1]).ppo_epochs)
    runs = _map(_job_arm, jobs, cfg.workers, "arms x seeds", quiet)
    summary = aggregate(runs, cfg)
    tables = format_tables(summary, cfg)
    if not quiet:
        print(tables)
    extra = {"tables_markdown": tables,
             "fit_seconds": {str(s): t for s, _, t in fits},
             "wall_seconds": time.perf_counter() - t0,
             "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                         "torch": torch.__version__},
             "date": _dt.datetime.now().isoformat(timespec="seconds")}
    paths = write_outputs(out_dir, cfg, runs, summary, extra)
    if not quiet:
        print(f"\nwrote {', '.join(str(p) for p in paths.values())} "
              f"({extra['wall_seconds']:.0f} s)")
    return {"runs": runs, "summary": summary, "paths": paths, "tables": tables}
