"""Base-policy fitting on a skewed solution set, and GRPO (PPO-clip, k3 KL) training.

Advantages come from the public API :func:`fairkernels.group_advantages` only.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import fairkernels

from .arms import ARMS
from .policy import ProofPolicy
from .tasks import (
    ADDITIVE_STEP_MAX,
    DOUBLE,
    STOP,
    Problem,
    ProblemSets,
    TaskConfig,
    batch_verify,
    canonical_additive,
    rare_style_mask,
    strip,
    valid_proofs,
)

__all__ = ["ARMS", "FitConfig", "GRPOConfig", "fit_base", "train_grpo", "grpo_step", "ppo_loss"]


@dataclass(frozen=True)
class FitConfig:
    """How the base policy is fitted: the skewed solution mixture and the optimiser.

    Medium problems (an additive proof exists) get ``n_per_medium`` examples drawn from the
    mixture ``p_canonical`` (greedy +3 proof, the habit), ``p_random_additive`` (a uniformly
    drawn valid additive proof: diverse correct proofs with spread-out likelihoods),
    ``p_doubling`` (a valid proof of the rare style, ``task.rare_style``) and the rest wrong attempts (random
    additive sequences), which keep the base's pass@1 on medium problems away from 1.
    Hard problems (only rare-style proofs) get ``n_per_hard`` examples: a valid rare-style proof with
    probability ``p_rare_hard`` (a little coverage of the rare style), else the habitual
    additive attempt (all +3), which fails.

    ``rare_continuation_weight`` multiplies the loss of the tokens *after the first one* in
    rare-style examples: the base then chooses the rare style as seldom as the data say (the
    first token keeps weight 1) but continues it as reliably as the common style, i.e. a policy
    that knows a technique well and rarely picks it.  1.0 is plain maximum likelihood.
    """

    n_per_medium: int = 48
    n_per_hard: int = 12
    p_canonical: float = 0.35
    p_random_additive: float = 0.25
    p_doubling: float = 0.1
    p_rare_hard: float = 0.05
    rare_continuation_weight: float = 30.0
    epochs: int = 12
    batch_size: int = 256
    lr: float = 3e-3
    hidden: int = 128

    def __post_init__(self) -> None:
        probs = (self.p_canonical, self.p_random_additive, self.p_doubling, self.p_rare_hard)
        if any(not 0.0 <= p <= 1.0 for p in probs):
            raise ValueError("fit mixture probabilities must lie in [0, 1]")
        if not self.rare_continuation_weight > 0:
            raise ValueError(f"rare_continuation_weight must be > 0, got "
                             f"{self.rare_continuation_weight}")
        if self.p_canonical + self.p_random_additive + self.p_doubling > 1.0:
            raise ValueError("p_canonical + p_random_additive + p_doubling must be <= 1")
        for name in ("n_per_medium", "n_per_hard", "epochs", "batch_size", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass(frozen=True)
class GRPOConfig:
    """GRPO hyper-parameters (spec grpo.md, "The experiment")."""

    steps: int = 500
    problems_per_step: int = 16
    group_size: int = 32
    lr: float = 3e-4
    clip: float = 0.2
    n_minibatches: int = 4
    ppo_epochs: int = 1
    kl_coef: float = 0.1
    beta_rank: float = 0.0
    max_grad_norm: float = 1.0
    pass_k: int | None = None  # pass@k advantages (fairkernels.group_advantages(pass_k=...))

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {self.group_size}")
        for name in ("steps", "problems_per_step", "n_minibatches", "ppo_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.beta_rank <= 1.0:
            raise ValueError(f"beta_rank must lie in [0, 1], got {self.beta_rank}")
        if self.pass_k is not None and self.pass_k < 1:
            raise ValueError(f"pass_k must be >= 1 or None, got {self.pass_k}")
        if self.lr <= 0 or self.clip <= 0 or self.kl_coef < 0:
            raise ValueError("lr and clip must be > 0 and kl_coef >= 0")


def pad(proof: tuple[int, ...] | np.ndarray, max_len: int) -> list[int]:
    """STOP-pad a proof to ``max_len`` tokens (a full-length proof carries no STOP)."""
    p = [int(x) for x in proof]
    return p + [STOP] * (max_len - len(p))


def skewed_solutions(problems: ProblemSets, task: TaskConfig, fit: FitConfig,
                     rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The base policy's fitting set drawn as in :class:`FitConfig`.

    Returns ``(starts, deltas, tokens, is_rare)``; ``is_rare`` marks rare-style examples.
    """
    L = task.max_len
    starts: list[int] = []
    deltas: list[int] = []
    rows: list[list[int]] = []
    flags: list[bool] = []
    for prob in problems.fit:
        valid = valid_proofs(prob, L)
        rare = valid[rare_style_mask(valid, task.rare_style)]
        additive = valid[~np.any(valid == DOUBLE, axis=1)]
        hard = problems.category[prob] == "hard"
        for _ in range(fit.n_per_hard if hard else fit.n_per_medium):
            u = rng.random()
            if hard:
                if u < fit.p_rare_hard:
                    row = pad(strip(rare[rng.integers(len(rare))]), L)
                else:
                    row = [2] * L  # the habit: as many +3 as fit, which falls short
            elif u < fit.p_canonical:
                row = pad(canonical_additive(prob.delta, L), L)
            elif u < fit.p_canonical + fit.p_random_additive:
                row = pad(strip(additive[rng.integers(len(additive))]), L)
            elif u < fit.p_canonical + fit.p_random_additive + fit.p_doubling and len(rare):
                row = pad(strip(rare[rng.integers(len(rare))]), L)
            else:  # a sloppy attempt: random additive steps of random length
                n = int(rng.integers(1, L + 1))
                row = pad(tuple(int(x) for x in rng.integers(0, ADDITIVE_STEP_MAX, n)), L)
            starts.append(prob.start)
            deltas.append(prob.delta)
            rows.append(row)
            flags.append(bool(rare_style_mask(np.array([row]), task.rare_style)[0]))
    return (np.array(starts), np.array(deltas), np.array(rows, dtype=np.int64),
            np.array(flags, dtype=bool))


def fit_base(problems: ProblemSets, task: TaskConfig, fit: FitConfig, seed: int,
             progress: Any = None) -> ProofPolicy:
    """Fit a fresh policy by maximum likelihood on the skewed solution set."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    starts, deltas, tokens, is_rare = skewed_solutions(problems, task, fit, rng)
    weights = np.ones(tokens.shape, dtype=np.float32)
    weights[is_rare, 1:] = fit.rare_continuation_weight
    policy = ProofPolicy(task.max_start, task.max_delta, task.max_len, hidden=fit.hidden)
    opt = torch.optim.Adam(policy.parameters(), lr=fit.lr)
    s_t, d_t, tok_t, w_t = map(torch.as_tensor, (starts, deltas, tokens, weights))
    n = len(starts)
    steps_per_epoch = max(1, n // fit.batch_size)
    total = fit.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    for _ in range(fit.epochs):
        perm = torch.as_tensor(rng.permutation(n))
        for b in range(steps_per_epoch):
            idx = perm[b * fit.batch_size:(b + 1) * fit.batch_size]
            logp, mask = policy.score(s_t[idx], d_t[idx], tok_t[idx])
            w = w_t[idx] * mask
            loss = -((logp * w).sum() / w.sum())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if progress is not None:
                progress()
    return policy


@dataclass
class StepStats:
    """What one GRPO step saw and how long its parts took (seconds)."""

    mean_reward: float
    share_signal: float
    distinct_correct: float
    rare_share_correct: float
    t_total: float
    t_advantage: float


@dataclass
class TrainLog:
    """Per-step statistics of a GRPO run."""

    steps: list[StepStats] = field(default_factory=list)

    def summary(self, first: int = 50) -> dict[str, float]:
        """Means over the first and last ``first`` steps (diversity / signal diagnostics)."""
        out: dict[str, float] = {}
        if not self.steps:
            return out
        for tag, part in (("first", self.steps[:first]), ("last", self.steps[-first:])):
            for key in ("mean_reward", "share_signal", "distinct_correct", "rare_share_correct"):
                vals = [getattr(s, key) for s in part if not np.isnan(getattr(s, key))]
                out[f"{key}_{tag}"] = float(np.mean(vals)) if vals else float("nan")
        out["t_step_ms"] = 1e3 * float(np.mean([s.t_total for s in self.steps]))
        out["t_advantage_ms"] = 1e3 * float(np.mean([s.t_advantage for s in self.steps]))
        return out


def group_diversity(tokens: np.ndarray, correct: np.ndarray, group_size: int
                    ) -> tuple[float, float, float]:
    """(share of groups with signal, distinct correct proofs per group with >= 1 correct,
    share of correct samples using the rare style)."""
    g = correct.reshape(-1, group_size)
    n_ok = g.sum(1)
    signal = float(np.mean((n_ok > 0) & (n_ok < group_size)))
    tok_g = tokens.reshape(-1, group_size, tokens.shape[1])
    distinct = [len({tuple(r) for r in tok_g[i][g[i]]}) for i in range(len(g)) if n_ok[i] > 0]
    rare = np.any(tokens == DOUBLE, axis=1)[correct]
    return (signal, float(np.mean(distinct)) if distinct else float("nan"),
            float(rare.mean()) if rare.size else float("nan"))


def ppo_loss(policy: ProofPolicy, starts: torch.Tensor, deltas: torch.Tensor,
             tokens: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor,
             adv_tok: torch.Tensor, mask: torch.Tensor, cfg: GRPOConfig) -> torch.Tensor:
    """PPO clipped surrogate + k3 KL to the base policy, token-mean over the minibatch."""
    logp, _ = policy.score(starts, deltas, tokens)
    ratio = torch.exp(logp - old_logp)
    surr = torch.minimum(ratio * adv_tok,
                         torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv_tok)
    log_r = ref_logp - logp  # k3 estimator of KL(pi || ref): exp(x) - x - 1, x = log ref/pi
    kl = torch.exp(log_r) - log_r - 1
    per_tok = -surr + cfg.kl_coef * kl
    return (per_tok * mask).sum() / mask.sum().clamp_min(1.0)


def grpo_step(policy: ProofPolicy, ref: ProofPolicy, opt: torch.optim.Optimizer,
              batch_problems: list[Problem], cfg: GRPOConfig, gen: torch.Generator,
              rng: np.random.Generator) -> StepStats:
    """One GRPO step: sample G proofs per problem, verify, advantages, PPO minibatch updates."""
    t0 = time.perf_counter()
    G = cfg.group_size
    starts = torch.tensor([p.start for p in batch_problems]).repeat_interleave(G)
    deltas = torch.tensor([p.delta for p in batch_problems]).repeat_interleave(G)
    targets = (starts + deltas).numpy()
    batch = policy.sample(starts, deltas, generator=gen)
    correct = batch_verify(starts.numpy(), targets, batch.tokens.numpy())
    rewards = torch.as_tensor(correct, dtype=torch.float32)
    ta = time.perf_counter()
    adv_tok, has_signal = fairkernels.group_advantages(
        rewards, group_size=G, token_logp=batch.token_logp, mask=batch.mask,
        likelihood="mean", beta_rank=cfg.beta_rank, pass_k=cfg.pass_k, return_signal=True)
    t_adv = time.perf_counter() - ta
    signal, distinct, rare = group_diversity(batch.tokens.numpy(), correct, G)
    keep = torch.as_tensor(has_signal, dtype=torch.bool)
    if bool(keep.any()):
        idx_keep = torch.nonzero(keep).squeeze(1)
        with torch.no_grad():
            ref_logp, _ = ref.score(starts[idx_keep], deltas[idx_keep], batch.tokens[idx_keep])
        sub = (starts[idx_keep], deltas[idx_keep], batch.tokens[idx_keep],
               batch.token_logp[idx_keep], ref_logp, adv_tok[idx_keep].float(),
               batch.mask[idx_keep])
        n = len(idx_keep)
        mb = max(1, -(-n // cfg.n_minibatches))
        for _ in range(cfg.ppo_epochs):
            perm = torch.as_tensor(rng.permutation(n))
            for b in range(0, n, mb):
                j = perm[b:b + mb]
                loss = ppo_loss(policy, *(x[j] for x in sub), cfg=cfg)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                opt.step()
    return StepStats(mean_reward=float(correct.mean()), share_signal=signal,
                     distinct_correct=distinct, rare_share_correct=rare,
                     t_total=time.perf_counter() - t0, t_advantage=t_adv)


def train_grpo(base: ProofPolicy, train_problems: list[Problem], cfg: GRPOConfig, seed: int,
               progress: Any = None) -> tuple[ProofPolicy, TrainLog]:
    """Run GRPO from a copy of ``base`` (kept frozen as the KL reference)."""
    if not train_problems:
        raise ValueError("train_problems must not be empty")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    policy = copy.deepcopy(base)
    ref = copy.deepcopy(base).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    log = TrainLog()
    per = min(cfg.problems_per_step, len(train_problems))
    for _ in range(cfg.steps):
        pick = rng.choice(len(train_problems), size=per, replace=False)
        log.steps.append(grpo_step(policy, ref, opt, [train_problems[i] for i in pick],
                                   cfg, gen, rng))
        if progress is not None:
            progress()
    return policy, log
