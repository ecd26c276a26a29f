"""Group-relative advantages: fairkernels against the baselines users would write.

Cases (float32, N = 65,536 sequences in groups of 16; "fixed" = consecutive rows, "ragged" =
shuffled integer ids):
  a  sequence-level advantages, no rank reweighting
  b  sequence-level with rank reweighting from per-sequence log-probs
  c  token-level: ranks from token log-probs [N, T] reduced under the mask, broadcast to [N, T]
  d  token-level broadcast alone (per-sequence rewards in, [N, T] advantages out)
  e  pass@k advantages (k = 4) of the [N] rewards
  f  several rewards per sample: [N, R = 4] rewards with weights, both of TRL 1.16.0's
     multi_objective_aggregation modes (variant = the mode), fixed groups
with T = 1,024.  Baselines in the same run: a per-group Python loop (verl's
compute_grpo_outcome_advantage and the authors' argsort ranks), vectorised torch (TRL's
view(-1, G); segment sums with index_add_ as verl's vectorised estimator), and for c and d the
memory floor: a copy producing a result of the same size under the same allocation policy
(fresh result: clone(); caller's buffer: copy_()).  bench/report.py turns the JSON into ratios.
"""

from __future__ import annotations

import inspect
import math
import textwrap
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

import fairkernels
from cuda_timing import synchronized

N, G, T, BETA = 65_536, 16, 1_024, 0.25
EPS = 1e-6


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    rewards = (torch.rand(N, generator=g) < 0.4).float()
    seq_logp = torch.randn(N, generator=g)
    ids = torch.randperm(N, generator=g) // G
    token_logp = torch.randn(N, T, generator=g)
    mask = torch.rand(N, T, generator=g) < 0.8
    return dict(rewards=rewards, seq_logp=seq_logp, ids=ids, token_logp=token_logp, mask=mask,
                mask_float=mask.float(), out=torch.empty(N, T))


def grouping(data, variant):
    return dict(group_size=G) if variant == "fixed" else dict(group_ids=data["ids"])


def tag(benchmark, case, variant, impl, policy="fresh"):
    benchmark.group = f"{case}-{variant}-{policy}" if case in ("c", "d") else f"{case}-{variant}"
    benchmark.extra_info.update(case=case, variant=variant, impl=impl, policy=policy)


# ---- baselines -------------------------------------------------------------------------------


def verl_loop(scores, index, eps=EPS):
    """verl compute_grpo_outcome_advantage (Python loop over uid groups)."""
    scores = scores.clone()
    id2score = defaultdict(list)
    id2mean, id2std = {}, {}
    for i in range(len(scores)):
        id2score[index[i]].append(scores[i])
    for idx in id2score:
        if len(id2score[idx]) == 1:
            id2mean[idx], id2std[idx] = torch.tensor(0.0), torch.tensor(1.0)
        else:
            values = torch.stack(id2score[idx])
            id2mean[idx], id2std[idx] = values.mean(), values.std()
    for i in range(len(scores)):
        scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + eps)
    return scores


def authors_rank_loop(scores, likelihood, index, beta=BETA):
    """The authors' reweighting: per group, rank = argsort(argsort(likelihood))."""
    scores = scores.clone()
    groups = defaultdict(list)
    for i, uid in enumerate(index):
        groups[uid].append(i)
    for rows in groups.values():
        rows = torch.tensor(rows)
        rank = likelihood[rows].argsort().argsort().float()
        scores[rows] = scores[rows] * (1 - rank / len(rows) * beta)
    return scores


def python_loop(data, variant, ranks_from=None):
    index = (torch.arange(N) // G).tolist() if variant == "fixed" else data["ids"].tolist()
    scores = data["rewards"]
    if ranks_from is not None:
        scores = authors_rank_loop(scores, ranks_from, index)
    return verl_loop(scores, index)


def masked_mean_logp(data):
    # torch's fastest masked mean here: bool mask selects (a float-mask multiply is slower).
    lp, mask = data["token_logp"], data["mask"]
    return torch.where(mask, lp, 0.0).sum(1) / mask.sum(1).clamp_min(1)


def torch_fixed(rewards, likelihood=None):
    """TRL style: view(-1, G), argsort ranks, mean, std."""
    x = rewards.view(-1, G)
    if likelihood is not None:
        rank = likelihood.view(-1, G).argsort(dim=1).argsort(dim=1).float()
        x = x * (1 - BETA * rank / G)
    adv = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + EPS)
    return adv.view(-1)


def torch_segments(rewards, ids, likelihood=None):
    """verl's vectorised estimator style: segment sums with index_add_ over unique ids."""
    _, inverse = torch.unique(ids, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    count = torch.zeros(n_groups, device=rewards.device).index_add_(0, inverse, torch.ones_like(rewards))
    if likelihood is not None:
        # ranks within each group: stable sort by likelihood, then by group
        by_likelihood = torch.sort(likelihood, stable=True).indices
        order = by_likelihood[torch.sort(inverse[by_likelihood], stable=True).indices]
        starts = torch.cumsum(count, 0) - count
        rank = torch.empty_like(rewards)
        rank[order] = torch.arange(N, dtype=rewards.dtype, device=rewards.device) - starts[inverse[order]]
        rewards = rewards * (1 - BETA * rank / count[inverse])
    mean = torch.zeros(n_groups, device=rewards.device).index_add_(0, inverse, rewards) / count
    centered = rewards - mean[inverse]
    var = torch.zeros(n_groups, device=rewards.device).index_add_(0, inverse, centered * centered) / (count - 1)
    return centered / (var.sqrt()[inverse] + EPS)


def torch_vectorized(data, variant, likelihood=None):
    if variant == "fixed":
        return torch_fixed(data["rewards"], likelihood)
    return torch_segments(data["rewards"], data["ids"], likelihood)


# ---- a, b: sequence level ----------------------------------------------------------------------

VARIANTS = ["fixed", "ragged"]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["a", "b"])
def test_sequence_fairkernels(benchmark, data, case, variant):
    tag(benchmark, case, variant, "fairkernels")
    extra = dict(seq_logp=data["seq_logp"], beta_rank=BETA) if case == "b" else {}
    benchmark(fairkernels.group_advantages, data["rewards"], **grouping(data, variant), **extra)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["a", "b"])
def test_sequence_torch(benchmark, data, case, variant):
    tag(benchmark, case, variant, "torch")
    expected = fairkernels.group_advantages(
        data["rewards"], **grouping(data, variant),
        **(dict(seq_logp=data["seq_logp"], beta_rank=BETA) if case == "b" else {}),
    )
    got = benchmark(torch_vectorized, data, variant, data["seq_logp"] if case == "b" else None)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)  # the baseline is a fair one


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["a", "b"])
def test_sequence_python_loop(benchmark, data, case, variant):
    tag(benchmark, case, variant, "python_loop")
    likelihood = data["seq_logp"] if case == "b" else None
    benchmark.pedantic(python_loop, args=(data, variant, likelihood), rounds=2, iterations=1)


# ---- c, d: token level ------------------------------------------------------------------------

POLICIES = ["fresh", "out"]


def token_kwargs(data, case):
    return dict(token_logp=data["token_logp"], beta_rank=BETA) if case == "c" else {}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["c", "d"])
def test_token_fairkernels(benchmark, data, case, variant, policy):
    tag(benchmark, case, variant, "fairkernels", policy)
    out = dict(out=data["out"]) if policy == "out" else {}
    benchmark(fairkernels.group_advantages, data["rewards"], **grouping(data, variant), mask=data["mask"],
              **token_kwargs(data, case), **out)


def torch_token(data, case, variant, out=None, mask_dtype="bool"):
    likelihood = masked_mean_logp(data) if case == "c" else None
    adv = torch_vectorized(data, variant, likelihood)
    mask = data["mask"] if mask_dtype == "bool" else data["mask_float"]
    if out is None:
        return adv[:, None] * mask
    return torch.mul(adv[:, None], mask, out=out)


@pytest.mark.parametrize("mask_dtype", ["bool", "float32"])
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["c", "d"])
def test_token_torch(benchmark, data, case, variant, policy, mask_dtype):
    tag(benchmark, case, variant, f"torch_{mask_dtype}_mask", policy)
    out = data["out"] if policy == "out" else None
    benchmark.pedantic(torch_token, args=(data, case, variant, out, mask_dtype), rounds=3, iterations=1)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["c", "d"])
def test_token_python_loop(benchmark, data, case, variant):
    tag(benchmark, case, variant, "python_loop", "fresh")

    def run():
        likelihood = masked_mean_logp(data) if case == "c" else None
        return python_loop(data, variant, likelihood)[:, None] * data["mask"]

    benchmark.pedantic(run, rounds=1, iterations=1)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", ["c", "d"])
def test_token_memory_floor(benchmark, case, policy):
    """The memory floor: clone() (fresh result) or copy_() (caller's buffer) of a float32 [N, T]
    tensor, i.e. producing a result of the same size under the same allocation policy.  The
    kernel itself reads more for c (log-probs and mask) and less for d (the mask only)."""
    tag(benchmark, case, "any", "copy_floor", policy)  # the floor does not depend on the grouping
    source = torch.ones(N, T)
    if policy == "fresh":
        benchmark(source.clone)
    else:
        target = torch.zeros_like(source)
        benchmark(target.copy_, source)


# ---- CUDA: c and d against a device-to-device copy of the same bytes --------------------------


@pytest.fixture(scope="module")
def cuda_data(data):
    return {k: v.cuda() for k, v in data.items() if k != "mask_float"}


@pytest.mark.cuda
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["c", "d"])
def test_cuda_token_fairkernels(benchmark, cuda_data, case, variant, policy):
    tag(benchmark, case, variant, "fairkernels", policy)
    benchmark.extra_info["family"] = "advantage-cuda"
    out = dict(out=cuda_data["out"]) if policy == "out" else {}
    benchmark(synchronized(fairkernels.group_advantages, cuda_data["rewards"], **grouping(cuda_data, variant),
                           mask=cuda_data["mask"], **token_kwargs(cuda_data, case), **out))


@pytest.mark.cuda
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", ["c", "d"])
def test_cuda_token_memory_floor(benchmark, case, policy):
    tag(benchmark, case, "any", "copy_floor", policy)
    benchmark.extra_info["family"] = "advantage-cuda"
    source = torch.ones(N, T, device="cuda")
    target = torch.zeros_like(source)
    benchmark(synchronized(source.clone) if policy == "fresh" else synchronized(target.copy_, source))


@pytest.mark.cuda
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["c", "d"])
def test_cuda_token_torch(benchmark, cuda_data, case, variant):
    tag(benchmark, case, variant, "torch_bool_mask", "fresh")
    benchmark.extra_info["family"] = "advantage-cuda"
    benchmark(synchronized(torch_token, cuda_data, case, variant))


# ---- e: pass@k advantages ------------------------------------------------------------------------

PASS_K = 4


def torch_pass_at_k_fixed(rewards, top, tail, share):
    """Fixed groups of G: sort each row of view(-1, G), reverse cumulative sum for the tail of
    every E_i, scatter back.  top, tail: the [G] coefficient tables, computed once per (G, k)
    outside the timed call (a training loop keeps them)."""
    v, order = rewards.view(-1, G).sort(dim=1)
    v = v - v[:, -1:]  # from the best reward (as the kernel: no cancellation near the top)
    cumulative = (v * tail).cumsum(1)
    suffix = cumulative[:, -1:] - cumulative  # sum over j > i
    expected = v * top + suffix
    mu = (v * top).sum(1, keepdim=True) * share
    sigma = (((v - mu) ** 2) * top).sum(1, keepdim=True).mul_(share).sqrt_()
    advantage = (expected - mu) / (sigma + EPS)
    return torch.empty_like(advantage).scatter_(1, order, advantage).view(-1)


def fixed_coefficients(m, k):
    k = min(k, m)
    top = torch.tensor([math.comb(j - 1, k - 1) / math.comb(m - 1, k - 1) for j in range(1, m + 1)])
    tail = torch.tensor([0.0] + [top[j - 1].item() * (k - 1) / (j - 1) for j in range(2, m + 1)])
    return top, tail, k / m


def torch_pass_at_k_ragged(rewards, ids, k):
    """Ragged ids: stable sort by reward then by id (rows of a group contiguous and ascending),
    positions within the group, log-gamma coefficients per row (group sizes vary), segment
    sums by cumulative sums and gathers at the group ends, scatter back."""
    by_reward = torch.sort(rewards, stable=True).indices
    order = by_reward[torch.sort(ids[by_reward], stable=True).indices]
    sorted_ids = ids[order]
    _, inverse, count = torch.unique_consecutive(sorted_ids, return_inverse=True, return_counts=True)
    end = torch.cumsum(count, 0) - 1  # last sorted slot of each group
    start = end - count + 1
    j = torch.arange(len(rewards), device=rewards.device) - start[inverse] + 1  # 1-based position
    m = count[inverse].to(torch.float64)
    kk = torch.clamp(torch.full_like(m, k), max=m)
    jf = j.to(torch.float64)
    log_top = (torch.lgamma(jf) - torch.lgamma(jf - kk + 1)) - (torch.lgamma(m) - torch.lgamma(m - kk + 1))
    top = torch.where(jf >= kk, torch.exp(log_top), 0.0).to(rewards.dtype)
    tail = torch.where(jf >= 2, top * ((kk - 1) / (jf - 1).clamp_min(1)).to(rewards.dtype), 0.0)
    share = (kk / m).to(rewards.dtype)
    v = rewards[order]
    v = v - v[end][inverse]
    weighted_tail = v * tail
    csum = torch.cumsum(weighted_tail, 0, dtype=torch.float64)  # float32 cancels over the batch
    suffix = (csum[end][inverse] - csum).to(v.dtype)  # sum over later slots of the same group
    expected = v * top + suffix
    weighted = v * top
    group_sum = torch.zeros(len(count), dtype=v.dtype, device=v.device).index_add_(0, inverse, weighted)
    mu = (group_sum[inverse] * share)
    spread = torch.zeros_like(group_sum).index_add_(0, inverse, (v - mu) ** 2 * top)
    sigma = (spread[inverse] * share).sqrt()
    advantage = (expected - mu) / (sigma + EPS)
    return torch.empty_like(advantage).scatter_(0, order, advantage)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pass_at_k_fairkernels(benchmark, data, variant):
    tag(benchmark, "e", variant, "fairkernels")
    benchmark(fairkernels.group_advantages, data["rewards"], **grouping(data, variant), pass_k=PASS_K)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pass_at_k_torch(benchmark, data, variant):
    tag(benchmark, "e", variant, "torch")
    expected = fairkernels.group_advantages(data["rewards"], **grouping(data, variant), pass_k=PASS_K)
    if variant == "fixed":
        top, tail, share = fixed_coefficients(G, PASS_K)
        got = benchmark(torch_pass_at_k_fixed, data["rewards"], top, tail, share)
    else:
        got = benchmark(torch_pass_at_k_ragged, data["rewards"], data["ids"], PASS_K)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)  # the baseline is a fair one


# ---- f: several rewards per sample against TRL's own code -----------------------------------------

R = 4
MODES = ["sum_then_normalize", "normalize_then_sum"]


@pytest.fixture(scope="module")
def multi_data():
    g = torch.Generator().manual_seed(1)
    rewards = (torch.rand(N, R, generator=g) < 0.5).float() + 0.1 * torch.rand(N, R, generator=g)
    rewards[torch.rand(N, R, generator=g) < 0.05] = float("nan")
    return dict(rewards=rewards, weights=torch.tensor([1.0, 0.5, 2.0, 0.25]))


@pytest.fixture(scope="module")
def trl_advantages():
    """TRL 1.16.0's statements from rewards_per_func to advantages, read from the installed
    GRPOTrainer._generate_and_score_completions and run as they are (no model needed)."""
    grpo = pytest.importorskip("trl.trainer.grpo_trainer")
    source = inspect.getsource(grpo.GRPOTrainer._generate_and_score_completions)
    first = source.rindex("\n", 0, source.index("unscorable_mask = torch.isnan(rewards_per_func)")) + 1
    last = source.index("\n", source.index("advantages = torch.nan_to_num(advantages, nan=0.0)"))
    code = compile(textwrap.dedent(source[first:last]), grpo.__file__, "exec")

    def run(rewards_per_func, weights, mode):
        trainer = SimpleNamespace(multi_objective_aggregation=mode, scale_rewards="group", reward_weights=weights,
                                  reward_funcs=[None] * rewards_per_func.shape[1])
        namespace = dict(torch=torch, nanstd=grpo.nanstd, self=trainer, rewards_per_func=rewards_per_func,
                         num_generations=G, device=rewards_per_func.device)
        exec(code, namespace)
        return namespace["advantages"]

    return run


@pytest.mark.parametrize("mode", MODES)
def test_multi_reward_fairkernels(benchmark, multi_data, mode):
    tag(benchmark, "f", mode, "fairkernels")
    benchmark(fairkernels.group_advantages, multi_data["rewards"], group_size=G, reward_weights=multi_data["weights"],
              multi_reward=mode, preset="trl")


@pytest.mark.parametrize("mode", MODES)
def test_multi_reward_trl(benchmark, multi_data, trl_advantages, mode):
    tag(benchmark, "f", mode, "trl")
    expected = fairkernels.group_advantages(multi_data["rewards"], group_size=G, reward_weights=multi_data["weights"],
                                            multi_reward=mode, preset="trl")
    got = benchmark(trl_advantages, multi_data["rewards"], multi_data["weights"], mode)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
