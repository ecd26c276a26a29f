"""Experiment driver: fit base policies, run the RL arms, evaluate pass@N, write the results.

Every policy is evaluated with ``eval_samples`` samples per problem on the held-out problems
(hard ones, which only the rare style solves, and medium ones) and on the training problems,
separately.  pass@N uses the unbiased estimator; arms are summarised by mean and standard error
over seeds.  Outputs (CSV, JSON with the full configuration, PNG) go to ``out_dir``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fairkernels

from .. import outputs, sweep
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


# ----------------------------------------------------------------------------- cells

def fit_cell_config(cfg: ExperimentConfig, base_seed: int) -> dict[str, Any]:
    """What a base policy depends on: the task, the fitting configuration and its seed."""
    return {"stage": "fit", "task": asdict(cfg.task), "fit": asdict(cfg.fit), "base_seed": base_seed}


def arm_cell_config(cfg: ExperimentConfig, arm: str, seed: int, base_seed: int) -> dict[str, Any]:
    """What one (arm, seed) run depends on: its base policy's configuration, the arm's GRPO
    configuration (None for the base arm) and the evaluation settings."""
    return {"stage": "arm", "task": asdict(cfg.task), "fit": asdict(cfg.fit),
            "grpo": None if arm == "base" else asdict(cfg.arm_grpo(arm)), "eval_samples": cfg.eval_samples,
            "ks": list(cfg.ks), "eval_group": cfg.eval_group, "arm": arm, "seed": seed, "base_seed": base_seed}


def arm_runs(cfg: ExperimentConfig) -> list[tuple[str, int, int]]:
    """(arm, seed, base seed) of every run, in table order: the base arm once per base seed, each
    RL arm once per RL seed (RL seeds cycle over the base seeds)."""
    runs = []
    for arm in cfg.arms:
        if arm == "base":
            runs += [(arm, s, s) for s in cfg.base_seeds]
        else:
            runs += [(arm, s, cfg.base_seed_for(i)) for i, s in enumerate(cfg.rl_seeds)]
    return runs


def fit_cell(config: dict[str, Any], inputs: Any = None) -> dict[str, Any]:
    """Cell function: fits one base policy; returns its parameters (numpy) and the fit time."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    task = TaskConfig(**config["task"])
    policy = fit_base(generate_problems(task), task, FitConfig(**config["fit"]), seed=config["base_seed"])
    state = {name: value.detach().numpy() for name, value in policy.state_dict().items()}
    return {"state": state, "seconds": time.perf_counter() - t0}


def arm_cell(config: dict[str, Any], base_state: dict[str, np.ndarray]) -> dict[str, Any]:
    """Cell function: trains (unless base) and evaluates one (arm, seed) from its base policy."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    task, fit = TaskConfig(**config["task"]), FitConfig(**config["fit"])
    arm, seed, eval_samples, ks = config["arm"], config["seed"], config["eval_samples"], tuple(config["ks"])
    problems = generate_problems(task)
    policy = ProofPolicy(task.max_start, task.max_delta, task.max_len, hidden=fit.hidden)
    policy.load_state_dict({name: torch.from_numpy(value) for name, value in base_state.items()})
    train_summary: dict[str, float] = {}
    if arm != "base":
        policy, log = train_grpo(policy, problems.train, GRPOConfig(**config["grpo"]), seed=1000 + seed)
        train_summary = log.summary()
    t_train = time.perf_counter() - t0
    metrics = {}
    sets = eval_sets(problems)
    for name in ("heldout_hard", "heldout_medium", "train"):
        # a fixed evaluation seed per set and seed index: independent of the arm
        metrics[name] = evaluate(policy, sets[name], eval_samples, seed=77_000 + 10 * seed + EVAL_SETS.index(name),
                                 group=config["eval_group"])
    metrics["heldout"] = {k: np.concatenate([metrics["heldout_hard"][k], metrics["heldout_medium"][k]])
                          for k in metrics["heldout_hard"]}
    return {
        "arm": arm, "seed": seed, "base_seed": config["base_seed"],
        "metrics": {s: summarise_eval(metrics[s], eval_samples, ks) for s in EVAL_SETS},
        "correct_counts": {s: metrics[s]["correct"].astype(int).tolist() for s in EVAL_SETS},
        "train_log": train_summary,
        "seconds": {"train": t_train, "total": time.perf_counter() - t0},
    }


def _group_prefix(label: str) -> str:
    return f"{label}," if label else ""


def run_cells(groups: list[tuple[str, ExperimentConfig]], runner: sweep.Sweep
              ) -> tuple[list[dict[str, Any]], sweep.SweepResult]:
    """Fits every base policy (stage 1), then runs every (arm, seed) of every group (stage 2).
    Returns, per group, {"runs": the finished runs in table order, "fit_seconds", "missing"}."""
    fits: dict[str, sweep.Cell] = {}
    for label, cfg in groups:
        for s in cfg.base_seeds:
            cell = sweep.Cell(fit_cell_config(cfg, s), f"{_group_prefix(label)}fit base_seed={s}")
            fits.setdefault(runner.key(cell), cell)
    fitted = runner.run(fit_cell, list(fits.values()), "grpo base fits")
    arms: list[tuple[float, sweep.Cell]] = []
    blocked = sweep.SweepResult()
    for label, cfg in groups:
        for arm, seed, base_seed in arm_runs(cfg):
            fit_key = runner.key(sweep.Cell(fit_cell_config(cfg, base_seed)))
            cell_label = f"{_group_prefix(label)}arm={arm},seed={seed}"
            config = arm_cell_config(cfg, arm, seed, base_seed)
            if fit_key not in fitted.results:
                blocked.failures.append(sweep.Failure(cell_label, config, f"its base policy (base_seed={base_seed}) "
                                                      "was not fitted: see that cell's failure"))
                continue
            # longest cells first, so that the workers finish together
            cost = 0 if arm == "base" else -cfg.arm_grpo(arm).ppo_epochs
            arms.append((cost, sweep.Cell(config, cell_label, inputs=fitted.results[fit_key]["state"])))
    arms.sort(key=lambda item: item[0])
    evaluated = runner.run(arm_cell, [cell for _, cell in arms], "grpo arms x seeds")
    outcome = fitted.merge(evaluated).merge(blocked)
    per_group = []
    for _, cfg in groups:
        runs, missing = [], []
        for arm, seed, base_seed in arm_runs(cfg):
            key = runner.key(sweep.Cell(arm_cell_config(cfg, arm, seed, base_seed)))
            if key in outcome.results:
                runs.append(outcome.results[key])
            else:
                missing.append({"arm": arm, "seed": seed})
        fit_seconds = {}
        for s in cfg.base_seeds:
            key = runner.key(sweep.Cell(fit_cell_config(cfg, s)))
            if key in outcome.results:
                fit_seconds[str(s)] = outcome.results[key]["seconds"]
        per_group.append({"runs": runs, "fit_seconds": fit_seconds, "missing": missing})
    return per_group, outcome


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
    outputs.save_figure(fig, path, dpi=120)
    plt.close(fig)


def write_outputs(out_dir: Path, cfg: ExperimentConfig, runs: list[dict[str, Any]],
                  summary: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Path]:
    """Write runs.csv, summary.csv, results.json (strict JSON: NaN as null) and passk.png into
    ``out_dir``, each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"runs_csv": out_dir / "runs.csv", "summary_csv": out_dir / "summary.csv",
             "json": out_dir / "results.json", "png": out_dir / "passk.png"}
    metric_names = list(runs[0]["metrics"]["train"])
    rows = []
    for r in sorted(runs, key=lambda r: (cfg.arms.index(r["arm"]), r["seed"])):
        for s in EVAL_SETS:
            rows.append([r["arm"], r["seed"], r["base_seed"], s] + [r["metrics"][s][m] for m in metric_names])
    outputs.write_csv_rows(paths["runs_csv"], ["arm", "seed", "base_seed", "set"] + metric_names, rows)
    outputs.write_csv_dicts(paths["summary_csv"], summary, ["arm", "set", "metric", "n_seeds", "mean", "se"])
    doc = {"fairkernels_version": fairkernels.__version__, "config": config_to_dict(cfg),
           "summary": summary, "runs": runs, **extra}
    outputs.write_json(paths["json"], doc)
    plot(summary, cfg, paths["png"])
    return paths


def report_group(label: str, cfg: ExperimentConfig, group: dict[str, Any], out_dir: Path, quiet: bool,
                 extra: dict[str, Any]) -> dict[str, Any] | None:
    """Summary, tables and files of one group from its finished runs (None if it has none)."""
    runs = group["runs"]
    if not runs:
        print(f"grpo{' ' + label if label else ''}: no finished run, no output", file=sys.stderr)
        return None
    present = tuple(a for a in cfg.arms if any(r["arm"] == a for r in runs))
    shown = replace(cfg, arms=present)  # arms whose every run failed are left out of the tables
    summary = aggregate(runs, shown)
    tables = format_tables(summary, shown)
    if not quiet:
        if label:
            print(f"\n[{label}]")
        print(tables)
    doc_extra = {"tables_markdown": tables, "fit_seconds": group["fit_seconds"],
                 "complete": not group["missing"], "missing_runs": group["missing"], **extra}
    paths = write_outputs(out_dir, shown, runs, summary, doc_extra)
    return {"runs": runs, "summary": summary, "paths": paths, "tables": tables}


def write_sweep_table(path: Path, reports: list[tuple[str, ExperimentConfig, dict[str, Any]]]) -> None:
    """summary.csv of every group, with the group's label, variant, steps and n_train_hard."""
    rows = [{"group": label, "variant": cfg.variant, "steps": cfg.grpo.steps, "n_train_hard": cfg.task.n_train_hard,
             **row} for label, cfg, report in reports for row in report["summary"]]
    outputs.write_csv_dicts(path, rows, ["group", "variant", "steps", "n_train_hard",
                                         "arm", "set", "metric", "n_seeds", "mean", "se"])


def run_experiments(groups: list[tuple[str, ExperimentConfig]], out_dir: Path, executor: Any = None,
                    quiet: bool = False) -> tuple[list[dict[str, Any] | None], sweep.SweepResult]:
    """Runs the groups' cells into ``out_dir/cells`` (finished cells are reused), then writes each
    group's outputs (into ``out_dir`` for one group, ``out_dir/<label>`` for several)."""
    t0 = time.perf_counter()
    out_dir = outputs.prepare_output_dir(out_dir)
    executor = executor if executor is not None else sweep.LocalExecutor(groups[0][1].workers)
    with executor:
        per_group, outcome = run_cells(groups, sweep.Sweep("grpo", out_dir, executor, progress=not quiet))
    extra = {"wall_seconds": time.perf_counter() - t0,
             "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
             "date": _dt.datetime.now().isoformat(timespec="seconds")}
    reports = []
    for (label, cfg), group in zip(groups, per_group):
        folder = out_dir if len(groups) == 1 else out_dir / label
        reports.append(report_group(label, cfg, group, folder, quiet, extra))
    if len(groups) > 1:
        write_sweep_table(out_dir / "sweep.csv", [(label, cfg, r) for (label, cfg), r in zip(groups, reports) if r])
    if not quiet:
        print(f"\nwrote {out_dir} ({extra['wall_seconds']:.0f} s; cells: {outcome.done} run, "
              f"{outcome.skipped} already done, {len(outcome.failures)} failed)")
    return reports, outcome


def default_out_dir() -> Path:
    """A new folder under ./runs/ named by the time of the run."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"grpo-{stamp}"
    i = 1
    while path.exists():
        path = Path("runs") / f"grpo-{stamp}-{i}"
        i += 1
    return path


def run_experiment(cfg: ExperimentConfig, out_dir: Path | None = None, quiet: bool = False,
                   executor: Any = None) -> dict[str, Any]:
    """Fit the bases, run every (arm, seed), evaluate, print tables and write the outputs.

    The cells run on ``executor`` (default: a local pool of ``cfg.workers`` processes) and are
    kept in ``out_dir/cells``: calling again with the same ``out_dir`` runs only missing cells.
    Raises RuntimeError, naming the failed cells, if any cell failed (the others are saved)."""
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir()
    reports, outcome = run_experiments([("", cfg)], out_dir, executor, quiet)
    if outcome.failures:
        sweep.report_failures(out_dir, outcome)
        raise RuntimeError(f"{len(outcome.failures)} cells failed: "
                           + "; ".join(f"[{f.label}] {f.headline()}" for f in outcome.failures))
    return reports[0]
