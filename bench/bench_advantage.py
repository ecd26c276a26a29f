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
view(-1, G); segment sums with index_add_ as verl's vectorised estimator; for c the masked
log-prob sums as batched dot products, torch's fastest way here), and for c and d the memory
floor: the fastest known way to produce a result of the same size under the same allocation
policy (caller's buffer: copy_(); fresh result: a fresh buffer with huge pages advised as
fairkernels advises its outputs (fairkernels._memory), then copy_()).

Fresh token-level results are also measured with the huge-page policy off
(`fairkernels_4k_pages`, i.e. FAIRKERNELS_HUGEPAGES=0) and torch's [N, T] results and
temporaries both as torch allocates them (`torch_*_mask`) and written with out= into fresh
buffers advised the same way (`torch_*_mask_hugepages`: what torch does with
THP_MEM_ALLOC_ENABLE=1).  bench/report.py turns the JSON into ratios.
"""

from __future__ import annotations

import inspect
import math
import textwrap
import uuid
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import fairkernels
from cuda_timing import synchronized
from fairkernels import _memory

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


def fresh(shape, dtype=torch.float32, huge_pages=False):
    """A fresh CPU tensor; huge_pages: advised as fairkernels advises its own fresh outputs."""
    x = torch.empty(shape, dtype=dtype)
    if huge_pages:
        _memory.advise_fresh(x.data_ptr(), x.nbytes)
    return x


def float_mask(data, mask_dtype, huge_pages=False):
    if mask_dtype == "float32":
        return data["mask_float"]
    return fresh(data["mask"].shape, huge_pages=huge_pages).copy_(data["mask"])  # bool -> float once


def masked_mean_logp(data, mask_dtype="bool", huge_pages=False):
    """torch's fastest masked mean measured here: batched dot products of the log-probs with a
    float mask (no [N, T] temporary; where(mask, lp, 0).sum(1) and bool sums are 5-15x slower)."""
    lp, mask = data["token_logp"], float_mask(data, mask_dtype, huge_pages)
    return torch.bmm(lp.unsqueeze(1), mask.unsqueeze(2)).view(-1) / mask.sum(1).clamp_min(1)


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


def torch_token(data, case, variant, out=None, mask_dtype="bool", huge_pages=False):
    likelihood = masked_mean_logp(data, mask_dtype, huge_pages) if case == "c" else None
    adv = torch_vectorized(data, variant, likelihood)
    mask = data["mask"] if mask_dtype == "bool" else data["mask_float"]
    if out is None and not huge_pages:
        return adv[:, None] * mask
    if out is None:
        out = fresh(mask.shape, huge_pages=True)
    return torch.mul(adv[:, None], mask, out=out)


@pytest.mark.parametrize("huge_pages", [False, True])
@pytest.mark.parametrize("mask_dtype", ["bool", "float32"])
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["c", "d"])
def test_token_torch(benchmark, data, case, variant, policy, mask_dtype, huge_pages):
    if policy == "out" and huge_pages and (case == "d" or mask_dtype == "float32"):
        pytest.skip("out= and no fresh [N, T] temporary: nothing to advise")
    tag(benchmark, case, variant, f"torch_{mask_dtype}_mask" + ("_hugepages" if huge_pages else ""), policy)
    out = data["out"] if policy == "out" else None
    benchmark.pedantic(torch_token, args=(data, case, variant, out, mask_dtype, huge_pages), rounds=5, iterations=1)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["c", "d"])
def test_token_python_loop(benchmark, data, case, variant):
    tag(benchmark, case, variant, "python_loop", "fresh")

    def run():
        likelihood = masked_mean_logp(data, "float32") if case == "c" else None
        return python_loop(data, variant, likelihood)[:, None] * data["mask"]

    benchmark.pedantic(run, rounds=1, iterations=1)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["c", "d"])
def test_token_fairkernels_4k_pages(benchmark, data, case, variant):
    """Fresh results with the huge-page policy off (FAIRKERNELS_HUGEPAGES=0): what it buys."""
    tag(benchmark, case, variant, "fairkernels_4k_pages", "fresh")
    with _memory.policy_override(enabled=False):
        benchmark(fairkernels.group_advantages, data["rewards"], **grouping(data, variant), mask=data["mask"],
                  **token_kwargs(data, case))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", ["c", "d"])
def test_token_fairkernels_streaming_fresh(benchmark, data, case, variant):
    """A fresh result written with streaming stores (the out= path, into a fresh buffer advised
    as the policy advises): the measurement behind regular stores for fresh results."""
    tag(benchmark, case, variant, "fairkernels_streaming_stores", "fresh")
    benchmark(lambda: fairkernels.group_advantages(data["rewards"], **grouping(data, variant), mask=data["mask"],
                                                   out=fresh((N, T), huge_pages=True), **token_kwargs(data, case)))


def advised_copy(source):
    return fresh(source.shape, huge_pages=True).copy_(source)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", ["c", "d"])
def test_token_memory_floor(benchmark, case, policy):
    """The memory floor: the fastest known way to produce a float32 [N, T] result under the same
    allocation policy: copy_() into the caller's buffer, or for a fresh result a fresh buffer
    advised to use huge pages (as fairkernels' own outputs) and copy_().  The kernel itself reads
    more for c (log-probs and mask) and less for d (the mask only)."""
    tag(benchmark, case, "any", "copy_floor", policy)  # the floor does not depend on the grouping
    source = torch.ones(N, T)
    if policy == "fresh":
        benchmark(advised_copy, source)
    else:
        target = torch.zeros_like(source)
        benchmark(target.copy_, source)


@pytest.mark.parametrize("case", ["c", "d"])
def test_token_clone_4k_pages(benchmark, case):
    """clone() of the same tensor (torch's allocator, 4 KiB pages): the former fresh floor."""
    tag(benchmark, case, "any", "clone_4k_pages", "fresh")
    benchmark(torch.ones(N, T).clone)


# ---- verl's driver-side advantage step: uid strings, token-level rewards -----------------------
# The tensors verl's compute_advantage hands to its GRPO estimator: token_level_rewards [N, T]
# (the reward on the last response token), response_mask [N, T] and the prompt uid of each
# row as a numpy object array of uuid4 strings, N = 8,192 rows in groups of 16, T = 4,096.
# The mask is float32 for both sides (verl builds it from the attention mask).

VERL_N, VERL_T = 8_192, 4_096
VERL_CASE = f"verl-uid N={VERL_N} T={VERL_T}"


@pytest.fixture(scope="module")
def verl_data():
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(VERL_T // 8, VERL_T + 1, (VERL_N,), generator=g)
    mask = (torch.arange(VERL_T)[None, :] < lengths[:, None]).float()
    rewards = torch.zeros(VERL_N, VERL_T)
    rewards[torch.arange(VERL_N), lengths - 1] = (torch.rand(VERL_N, generator=g) < 0.4).float()
    prompts = np.array([str(uuid.UUID(int=int(k))) for k in torch.randint(0, 2**62, (VERL_N // G,), generator=g)],
                       dtype=object)
    uid = prompts[torch.randperm(VERL_N, generator=g).numpy() % (VERL_N // G)]  # shuffled, as after balancing
    return dict(token_level_rewards=rewards, response_mask=mask, index=uid)


def verl_grpo_vectorized(token_level_rewards, response_mask, index, epsilon=1e-6):
    """verl 0.9.1 compute_grpo_vectorized_outcome_advantage (verl/trainer/ppo/core_algos.py) with
    its helpers as_torch_index and group_mean_std (verl/utils/groupwise.py), reimplemented for
    the path these inputs take: uid strings do not parse as integers, so they are factorised
    with np.unique; group sums by index_add_, a two-pass variance (Bessel, eps = 0 as
    core_algos passes it), singleton groups mean 0 / std 1, then the broadcast multiply."""
    scores = token_level_rewards.sum(dim=-1)
    try:
        gidx = torch.from_numpy(index.astype(np.int64))  # as_torch_index first tries integers
    except (TypeError, ValueError):
        gidx = torch.from_numpy(np.unique(index, return_inverse=True)[1].astype(np.int64))
    n_groups = int(gidx.max().item()) + 1
    count = torch.zeros(n_groups).index_add_(0, gidx, torch.ones_like(scores))
    mean = torch.zeros(n_groups).index_add_(0, gidx, scores) / count.clamp_min(1.0)
    centered = scores - mean[gidx]
    var = torch.zeros(n_groups).index_add_(0, gidx, centered * centered) / (count - 1.0).clamp_min(1.0)
    std = torch.sqrt(torch.clamp(var, min=0.0))
    single = count <= 1.0
    if torch.any(single):
        mean, std = mean.clone(), std.clone()
        mean[single], std[single] = 0.0, 1.0
    scalars = (scores - mean[gidx]) / (std[gidx] + epsilon)
    return scalars.unsqueeze(-1) * response_mask


def fairkernels_uid(token_level_rewards, response_mask, index, epsilon=1e-6):
    """The same result through fairkernels: uid strings to dense ids with np.unique (as verl),
    the per-row reward (the row sum, as verl), then one kernel call (verl's singleton rule)."""
    ids = torch.from_numpy(np.unique(index, return_inverse=True)[1].astype(np.int64))
    scores = token_level_rewards.sum(dim=-1)
    return fairkernels.group_advantages(scores, group_ids=ids, mask=response_mask, eps=epsilon, singleton="raw")


def test_verl_uid_same_result(verl_data):
    torch.testing.assert_close(fairkernels_uid(**verl_data), verl_grpo_vectorized(**verl_data), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["fairkernels", "verl_grpo_vectorized"])
def test_verl_uid(benchmark, verl_data, impl):
    benchmark.group = "verl-uid"
    benchmark.extra_info.update(case=VERL_CASE, variant="uid-strings", impl=impl, policy="fresh")
    fn = fairkernels_uid if impl == "fairkernels" else verl_grpo_vectorized
    benchmark.pedantic(fn, kwargs=verl_data, rounds=5, iterations=1, warmup_rounds=1)


def test_verl_uid_floor(benchmark):
    benchmark.group = "verl-uid"
    benchmark.extra_info.update(case=VERL_CASE, variant="any", impl="copy_floor", policy="fresh")
    benchmark(advised_copy, torch.ones(VERL_N, VERL_T))


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
