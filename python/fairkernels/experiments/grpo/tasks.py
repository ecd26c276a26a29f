"""A verifiable synthetic proof-search task.

A problem is a pair of integers ``(start, target)``.  A proof is a sequence of at most
``max_len`` operations from a small fixed set (``+1``, ``+2``, ``+3``, ``*2``); the verifier
applies them to ``start`` and accepts when the final value equals ``target``.

Two proof *styles* exist:

* the **additive** style uses only ``+1/+2/+3``; it reaches at most ``3 * max_len`` above the
  start, so problems with ``target - start <= 3 * max_len`` are *medium* problems;
* the **doubling** style uses ``*2``.  It is the rare style of the base policy.  Which
  doubling proofs count as the rare style is set by ``TaskConfig.rare_style``: any proof with
  ``*2`` (``"any_doubling"``) or ``*2`` first and additive steps after it (``"double_first"``,
  the default).  *Hard* problems (``target - start > 3 * max_len``) have no additive proof and
  are solved only by the rare style.

The problem generator splits the problem space into disjoint pools: problems the base policy is
fitted on (``fit``), problems GRPO trains on (``train``) and held-out problems (``heldout``,
with ``n_heldout_hard`` hard problems that only the rare style solves).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

#: Operation tokens.  Index = token id; ``STOP`` ends a proof early.
OPS: tuple[str, ...] = ("+1", "+2", "+3", "*2")
STOP: int = len(OPS)
N_TOKENS: int = len(OPS) + 1
DOUBLE: int = 3  # token id of "*2", the rare style's operation
ADDITIVE_STEP_MAX: int = 3


def apply_op(value: int, op: int) -> int:
    """Apply operation token ``op`` to ``value``."""
    if op == 0:
        return value + 1
    if op == 1:
        return value + 2
    if op == 2:
        return value + 3
    if op == DOUBLE:
        return value * 2
    raise ValueError(f"op must be one of 0..{len(OPS) - 1}, got {op!r}")


@dataclass(frozen=True, order=True)
class Problem:
    """A proof-search problem: reach ``target`` from ``start``."""

    start: int
    target: int

    @property
    def delta(self) -> int:
        """``target - start``: the part of the encoding the policy sees besides ``start``."""
        return self.target - self.start


def verify(problem: Problem, proof: Sequence[int], max_len: int) -> bool:
    """Return True iff ``proof`` is a valid proof of ``problem``.

    A valid proof has between 1 and ``max_len`` tokens, each an operation id in
    ``0..len(OPS)-1`` (no STOP inside a proof), and applying them to ``problem.start`` yields
    ``problem.target``.  Anything else (wrong value, too long, unknown token, empty) is rejected.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a Problem, got {type(problem).__name__}")
    if not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    ops = list(proof)
    if not 1 <= len(ops) <= max_len:
        return False
    value = problem.start
    for op in ops:
        if not isinstance(op, (int, np.integer)) or not 0 <= op < len(OPS):
            return False
        value = apply_op(value, int(op))
    return value == problem.target


#: Definitions of the rare style.  "any_doubling": any proof that uses *2 (the doubling may sit
#: anywhere, so a blind policy must do harder arithmetic to get it right); "double_first": *2
#: as the first step and additive steps after it (the same additive skill, shifted by
#: ``start``, so a policy can use the rare style reliably while using it rarely).
RARE_STYLES: tuple[str, ...] = ("any_doubling", "double_first")


def rare_style_mask(seqs: np.ndarray, style: str) -> np.ndarray:
    """Bool per STOP-padded row: does the row belong to the rare ``style``?"""
    if style not in RARE_STYLES:
        raise ValueError(f"style must be one of {RARE_STYLES}, got {style!r}")
    seqs = np.asarray(seqs)
    if style == "any_doubling":
        return np.any(seqs == DOUBLE, axis=1)
    return (seqs[:, 0] == DOUBLE) & ~np.any(seqs[:, 1:] == DOUBLE, axis=1)


def canonical_additive(delta: int, max_len: int) -> tuple[int, ...] | None:
    """The base policy's favourite proof: greedy ``+3`` steps, then one smaller step.

    Returns None when no additive proof exists (delta out of reach).
    """
    if not 1 <= delta <= ADDITIVE_STEP_MAX * max_len:
        return None
    threes, rest = divmod(delta, 3)
    proof = (2,) * threes + ((rest - 1,) if rest else ())
    return proof if len(proof) <= max_len else None


@functools.lru_cache(maxsize=8)
def all_proof_sequences(max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every operation sequence of length 1..max_len.

    Returns ``(seqs, lengths)``: ``seqs`` is int8 ``[M, max_len]`` padded with STOP and
    ``lengths`` the number of operations of each sequence.
    """
    if max_len < 1 or max_len > 8:
        raise ValueError(f"max_len must be in 1..8 for enumeration, got {max_len}")
    rows: list[np.ndarray] = []
    lens: list[np.ndarray] = []
    for length in range(1, max_len + 1):
        grid = np.indices((len(OPS),) * length).reshape(length, -1).T
        pad = np.full((grid.shape[0], max_len - length), STOP)
        rows.append(np.concatenate([grid, pad], axis=1))
        lens.append(np.full(grid.shape[0], length))
    return np.concatenate(rows).astype(np.int8), np.concatenate(lens)


def final_values(starts: np.ndarray, seqs: np.ndarray) -> np.ndarray:
    """Final value of every sequence (rows of ``seqs``, STOP-padded) for every start.

    Returns int64 ``[len(starts), len(seqs)]``.
    """
    vals = np.repeat(np.asarray(starts, dtype=np.int64)[:, None], seqs.shape[0], axis=1)
    for t in range(seqs.shape[1]):
        op = seqs[:, t].astype(np.int64)[None, :]
        vals = np.where(op == 0, vals + 1, vals)
        vals = np.where(op == 1, vals + 2, vals)
        vals = np.where(op == 2, vals + 3, vals)
        vals = np.where(op == DOUBLE, vals * 2, vals)
    return vals


@dataclass(frozen=True)
class TaskConfig:
    """Sizes of the problem space and of the disjoint pools."""

    max_len: int = 6
    max_start: int = 24
    max_delta: int = 48
    n_heldout_hard: int = 80
    n_heldout_medium: int = 40
    n_train: int = 100
    n_train_hard: int = 0
    train_both_styles: bool = True
    rare_style: str = "double_first"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_len", "max_start", "max_delta"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_heldout_hard", "n_heldout_medium", "n_train", "n_train_hard"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.rare_style not in RARE_STYLES:
            raise ValueError(f"rare_style must be one of {RARE_STYLES}, got {self.rare_style!r}")


def classify(problem: Problem, max_len: int, style: str = "any_doubling") -> str:
    """``"medium"`` (an additive proof exists), ``"hard"`` (no additive proof, but a proof of
    the rare ``style``) or ``"none"``."""
    if 1 <= problem.delta <= ADDITIVE_STEP_MAX * max_len:
        return "medium"
    return "hard" if len(rare_proofs(problem, max_len, style)) else "none"


@dataclass
class ProblemSets:
    """Disjoint problem pools with a category label per problem."""

    fit: list[Problem]
    train: list[Problem]
    heldout: list[Problem]
    category: dict[Problem, str] = field(default_factory=dict)

    def heldout_hard(self) -> list[Problem]:
        """Held-out problems that only the rare (doubling) style solves."""
        return [p for p in self.heldout if self.category[p] == "hard"]


def generate_problems(config: TaskConfig) -> ProblemSets:
    """Split the problem space into disjoint fit / train / held-out pools.

    The space is every ``(start, start + delta)`` with ``1 <= start <= max_start`` and
    ``1 <= delta <= max_delta`` that has an additive proof (medium) or a proof of the rare
    style ``config.rare_style`` (hard).  With ``train_both_styles`` the
    medium training problems are drawn from those that both styles solve, so that GRPO groups
    can hold correct proofs of the rare style next to the common one (the condition under
    which the unlikeliness reward can act).  The split is a deterministic function of
    ``config.seed`` so that all policies of an experiment share it.
    """
    seqs, _ = all_proof_sequences(config.max_len)
    seqs_rare = seqs[rare_style_mask(seqs, config.rare_style)]
    starts = np.arange(1, config.max_start + 1)
    vals_rare = final_values(starts, seqs_rare)
    medium: list[Problem] = []
    hard: list[Problem] = []
    reach_add = ADDITIVE_STEP_MAX * config.max_len
    for i, s in enumerate(starts):
        reachable = set(int(v) for v in np.unique(vals_rare[i]))
        for d in range(1, config.max_delta + 1):
            p = Problem(int(s), int(s + d))
            if d <= reach_add:
                medium.append(p)
            elif int(s + d) in reachable:
                hard.append(p)
    rng = np.random.default_rng(config.seed)
    medium = [medium[i] for i in rng.permutation(len(medium))]
    hard = [hard[i] for i in rng.permutation(len(hard))]
    need_hard = config.n_heldout_hard + config.n_train_hard
    need_medium = config.n_heldout_medium + config.n_train
    if need_hard >= len(hard) or need_medium >= len(medium):
        raise ValueError(
            f"problem space too small: {len(hard)} hard / {len(medium)} medium problems for "
            f"{need_hard} hard / {need_medium} medium requested (raise max_start or max_delta)")
    if config.train_both_styles:
        # both-style problems first, so the training slice below takes them; the rest of the
        # medium pool (held-out, fit) stays a random mix
        both = [p for p in medium if np.any(vals_rare[p.start - 1] == p.target)]
        if len(both) < config.n_train:
            raise ValueError(f"only {len(both)} medium problems have proofs of both styles; "
                             f"n_train={config.n_train} is too many")
        train_medium = both[: config.n_train]
        chosen = set(train_medium)
        rest = [p for p in medium if p not in chosen]
        medium = rest[: config.n_heldout_medium] + train_medium + rest[config.n_heldout_medium:]
    heldout = hard[: config.n_heldout_hard] + medium[: config.n_heldout_medium]
    train = (hard[config.n_heldout_hard: need_hard]
             + medium[config.n_heldout_medium: need_medium])
    fit = hard[need_hard:] + medium[need_medium:]
    category = {p: "hard" for p in hard}
    category.update({p: "medium" for p in medium})
    return ProblemSets(fit=fit, train=train, heldout=heldout, category=category)


def rare_proofs(problem: Problem, max_len: int, style: str) -> np.ndarray:
    """The valid proofs of ``problem`` in the rare ``style`` (STOP-padded rows)."""
    valid = valid_proofs(problem, max_len)
    return valid[rare_style_mask(valid, style)]


def valid_proofs(problem: Problem, max_len: int) -> np.ndarray:
    """All valid proofs of ``problem`` as a STOP-padded int8 array ``[K, max_len]``."""
    seqs, _ = all_proof_sequences(max_len)
    vals = final_values(np.array([problem.start]), seqs)[0]
    return seqs[vals == problem.target]


def strip(row: Sequence[int]) -> tuple[int, ...]:
    """Proof tokens of a STOP-padded row (everything before the first STOP)."""
    out: list[int] = []
    for tok in row:
        if int(tok) == STOP:
            break
        out.append(int(tok))
    return tuple(out)


def batch_final_values(starts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Final value of each row's proof (STOP-padded ``tokens[N, T]``) from ``starts[N]``."""
    vals = np.asarray(starts, dtype=np.int64).copy()
    tokens = np.asarray(tokens)
    done = np.zeros(len(vals), dtype=bool)
    for t in range(tokens.shape[1]):
        op = tokens[:, t]
        done |= op == STOP
        vals = np.where(~done & (op == 0), vals + 1, vals)
        vals = np.where(~done & (op == 1), vals + 2, vals)
        vals = np.where(~done & (op == 2), vals + 3, vals)
        vals = np.where(~done & (op == DOUBLE), vals * 2, vals)
    return vals


def batch_verify(starts: np.ndarray, targets: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Vectorised :func:`verify` for STOP-padded proofs: bool per row.

    Rows whose first token is STOP (empty proofs) are rejected, as :func:`verify` does.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be 2-D, got shape {tokens.shape}")
    if tokens.min(initial=0) < 0 or tokens.max(initial=0) > STOP:
        raise ValueError(f"tokens must lie in 0..{STOP}")
    nonempty = tokens[:, 0] != STOP
    return nonempty & (batch_final_values(starts, tokens) == np.asarray(targets))
