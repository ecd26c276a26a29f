"""Benchmark of the fused propensity loss: forward + backward, N = 4,194,304 rows, float32,
estimator dr with the noise correction, on the CPU (and on CUDA when a device is present).

Compared in the same run with
  * the same loss written as eager torch ops with autograd, and
  * a copy of as many bytes as the fused kernel must read and write (a buffer of half that
    size copied into a fresh buffer advised to use huge pages, as fairkernels' own fresh
    outputs: a copy reads and writes it once).  Bytes: logits, labels, propensity and imputed
    logits (4 x 4 B) plus observed (bool, 1 B) read, and the two gradients (2 x 4 B) written:
    25 B per row.

reduction="none" (the per-row loss, forward only, same estimator) is compared with the floor of
its result: a fresh [N] float32 tensor advised to use huge pages plus copy_() of an existing one
(the fastest known way to produce a fresh result of that size), with a copy of the bytes it must
move (17 B per row read, 4 B written: `copy_of_traffic`), and measured with the huge-page policy
off as well (FAIRKERNELS_HUGEPAGES=0).

The estimators beyond the paper (sndr, switch_dr, dros, sg_ips, sg_dr, dr_jl, mrdr) are timed
the same way (fused forward + backward, and the same loss in eager torch + autograd), each
reported as a ratio to dr's fused time and to its own eager time.

    pytest bench/bench_propensity.py --benchmark-only     (pytest-benchmark statistics)
    python bench/bench_propensity.py [--device cuda]      (medians and ratios as a table)
    python bench/bench_propensity.py --estimators         (the estimator family: medians, ratios)
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import pytest
import torch
import torch.nn.functional as F

import fairkernels
from cuda_timing import synchronized
from fairkernels import _memory
from fairkernels.torch import CausalRMLoss

N = 4_194_304
RHO10, RHO01, P_MIN = 0.1, 0.2, 0.1
BYTES_PER_ROW = 4 * 4 + 1 + 2 * 4
NONE_BYTES_PER_ROW = 4 * 4 + 1 + 4  # reduction="none", no gradients: the row loss written


def make_inputs(device: str = "cpu", n: int = N):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(n, generator=g) * 3).to(device).requires_grad_()
    imputed = (torch.randn(n, generator=g) * 2).to(device).requires_grad_()
    labels = (torch.rand(n, generator=g) < 0.4).float().to(device)
    observed = (torch.rand(n, generator=g) < 0.2).to(device)
    propensity = (torch.rand(n, generator=g) * 0.95 + 0.05).to(device)
    return logits, labels, observed, propensity, imputed


LOSS = CausalRMLoss("bce", "dr", RHO10, RHO01, P_MIN)


def fused_step(logits, labels, observed, propensity, imputed) -> None:
    LOSS(logits, labels, observed, propensity, imputed).backward()
    logits.grad = imputed.grad = None


def eager_loss(logits, labels, observed, propensity, imputed) -> torch.Tensor:
    """The same dr + noise-corrected loss as plain torch ops."""
    return eager_rows(logits, labels, observed, propensity, imputed).mean()


def eager_rows(logits, labels, observed, propensity, imputed) -> torch.Tensor:
    d = 1.0 - RHO10 - RHO01
    l1, l0 = F.softplus(-logits), F.softplus(logits)
    surrogate = ((labels - RHO10) * l1 + (1.0 - labels - RHO01) * l0) / d
    w = observed.float() / propensity.clamp(min=P_MIN)
    q = torch.sigmoid(imputed)
    imputed_loss = q * l1 + (1.0 - q) * l0
    return imputed_loss + w * (surrogate - imputed_loss)


def eager_step(logits, labels, observed, propensity, imputed) -> None:
    eager_loss(logits, labels, observed, propensity, imputed).backward()
    logits.grad = imputed.grad = None


# The estimator family: hyper-parameters of the benchmark (tau switches off the rows with
# p < 0.2, about a sixth of the observed ones here).
TAU, DROS_LAMBDA, SG_LAMBDA = 5.0, 4.0, 0.3
HYPER = {"switch_dr": dict(tau=TAU), "dros": dict(lambda_=DROS_LAMBDA), "sg_ips": dict(lambda_=SG_LAMBDA),
         "sg_dr": dict(lambda_=SG_LAMBDA)}
NEW_ESTIMATORS = ("sndr", "switch_dr", "dros", "sg_ips", "sg_dr", "dr_jl", "mrdr")
FAMILY_LOSSES = {e: CausalRMLoss("bce", e, RHO10, RHO01, P_MIN, **HYPER.get(e, {})) for e in ("dr",) + NEW_ESTIMATORS}


def _imputed_for(estimator: str, imputed):
    return None if estimator == "sg_ips" else imputed


def family_fused_step(estimator, logits, labels, observed, propensity, imputed) -> None:
    FAMILY_LOSSES[estimator](logits, labels, observed, propensity, _imputed_for(estimator, imputed)).backward()
    logits.grad = imputed.grad = None


def eager_family_loss(estimator, logits, labels, observed, propensity, imputed) -> torch.Tensor:
    """Each estimator of the family as plain torch ops (the formulas of fairkernels.propensity)."""
    d = 1.0 - RHO10 - RHO01
    l1, l0 = F.softplus(-logits), F.softplus(logits)
    surrogate = ((labels - RHO10) * l1 + (1.0 - labels - RHO01) * l0) / d
    clipped = propensity.clamp(min=P_MIN)
    w = observed.float() / clipped
    if estimator == "sg_ips":
        return (w / (1 - SG_LAMBDA + SG_LAMBDA * w) * surrogate).mean()
    q = torch.sigmoid(imputed)
    imputed_loss = q * l1 + (1.0 - q) * l0
    if estimator in ("dr_jl", "mrdr"):
        m = w if estimator == "dr_jl" else w * w * (1 - clipped)
        return (m * (surrogate - imputed_loss) ** 2).mean()
    if estimator == "sndr":
        v = w * (w.shape[0] / w.sum())
    elif estimator == "switch_dr":
        v = torch.where(w <= TAU, w, torch.zeros_like(w))
    elif estimator == "dros":
        v = DROS_LAMBDA * w / (w * w + DROS_LAMBDA)
    elif estimator == "sg_dr":
        v = w / (1 - SG_LAMBDA + SG_LAMBDA * w)
    else:
        v = w
    return (imputed_loss + v * (surrogate - imputed_loss)).mean()


def eager_family_step(estimator, logits, labels, observed, propensity, imputed) -> None:
    eager_family_loss(estimator, logits, labels, observed, propensity, imputed).backward()
    logits.grad = imputed.grad = None


def copy_buffer(device: str = "cpu", n: int = N) -> torch.Tensor:
    return torch.empty(n * BYTES_PER_ROW // 2, dtype=torch.uint8, device=device)


def advised_copy(source: torch.Tensor) -> torch.Tensor:
    """source copied into a fresh tensor advised as fairkernels advises its fresh outputs."""
    target = torch.empty_like(source)
    _memory.advise_fresh(target.data_ptr(), target.nbytes)
    return target.copy_(source)


def per_row_loss(logits, labels, observed, propensity, imputed):
    return fairkernels.propensity_loss(logits.detach(), labels, observed, propensity, imputed.detach(),
                                       estimator="dr", rho10=RHO10, rho01=RHO01, p_min=P_MIN, reduction="none")


def tag(benchmark, impl: str, family: str = "propensity", variant: str = "float32") -> None:
    """Tags read by bench/report.py (python bench/report.py out.json --family propensity)."""
    benchmark.group = f"{family}-dr-noise-4M"
    benchmark.extra_info.update(family=family, case="dr+noise N=4194304 fwd+bwd", variant=variant, impl=impl,
                                policy="fresh")


@pytest.fixture(scope="module")
def inputs():
    return make_inputs()


@pytest.fixture(scope="module")
def cuda_inputs():
    return make_inputs("cuda")


def test_same_loss(inputs):
    torch.testing.assert_close(LOSS(*inputs), eager_loss(*inputs), rtol=1e-5, atol=1e-6)


def test_fused_forward_backward(benchmark, inputs):
    tag(benchmark, "fairkernels")
    benchmark(fused_step, *inputs)


def test_eager_torch_forward_backward(benchmark, inputs):
    tag(benchmark, "torch_eager")
    benchmark(eager_step, *inputs)


def test_copy_of_the_bytes(benchmark):
    tag(benchmark, "copy_floor", variant="any")
    benchmark(advised_copy, copy_buffer().fill_(1))


def tag_none(benchmark, impl: str, variant: str = "float32") -> None:
    benchmark.group = "propensity-none-4M"
    benchmark.extra_info.update(family="propensity", case="dr+noise N=4194304 reduction=none fwd", variant=variant,
                                impl=impl, policy="fresh")


def test_same_per_row_loss(inputs):
    with torch.no_grad():
        torch.testing.assert_close(per_row_loss(*inputs), eager_rows(*inputs), rtol=1e-5, atol=1e-5)  # cancellation


def test_per_row_loss(benchmark, inputs):
    tag_none(benchmark, "fairkernels")
    benchmark(per_row_loss, *inputs)


def test_per_row_loss_4k_pages(benchmark, inputs):
    tag_none(benchmark, "fairkernels_4k_pages")
    with _memory.policy_override(enabled=False):
        benchmark(per_row_loss, *inputs)


def test_per_row_floor(benchmark):
    tag_none(benchmark, "copy_floor", variant="any")
    benchmark(advised_copy, torch.ones(N))


def test_per_row_copy_of_traffic(benchmark):
    tag_none(benchmark, "copy_of_traffic")
    benchmark(advised_copy, torch.ones(N * NONE_BYTES_PER_ROW // 2, dtype=torch.uint8))


def tag_family(benchmark, estimator: str, impl: str) -> None:
    benchmark.group = f"propensity-{estimator}-noise-4M"
    benchmark.extra_info.update(family="propensity", case=f"{estimator}+noise N=4194304 fwd+bwd", variant="float32",
                                impl=impl, policy="fresh")


@pytest.mark.parametrize("estimator", NEW_ESTIMATORS)
def test_family_same_loss(inputs, estimator):
    small = tuple(t.detach()[:100_000].clone().requires_grad_(t.requires_grad) for t in inputs)
    got = FAMILY_LOSSES[estimator](*small[:4], _imputed_for(estimator, small[4]))
    torch.testing.assert_close(got, eager_family_loss(estimator, *small), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("estimator", NEW_ESTIMATORS)
def test_family_fused_forward_backward(benchmark, inputs, estimator):
    tag_family(benchmark, estimator, "fairkernels")
    benchmark(family_fused_step, estimator, *inputs)


@pytest.mark.parametrize("estimator", NEW_ESTIMATORS)
def test_family_eager_torch_forward_backward(benchmark, inputs, estimator):
    tag_family(benchmark, estimator, "torch_eager")
    benchmark(eager_family_step, estimator, *inputs)


@pytest.mark.cuda
def test_cuda_fused_forward_backward(benchmark, cuda_inputs):
    tag(benchmark, "fairkernels", "propensity-cuda")
    benchmark(synchronized(fused_step), *cuda_inputs)


@pytest.mark.cuda
def test_cuda_eager_torch_forward_backward(benchmark, cuda_inputs):
    tag(benchmark, "torch_eager", "propensity-cuda")
    benchmark(synchronized(eager_step), *cuda_inputs)


@pytest.mark.cuda
def test_cuda_copy_of_the_bytes(benchmark):
    tag(benchmark, "copy_floor", "propensity-cuda", variant="any")
    buffer = copy_buffer("cuda")
    benchmark(synchronized(buffer.clone))


def _median_ms(fn, device: str, repeats: int) -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--estimators", action="store_true", help="time the estimator family against dr")
    args = parser.parse_args()
    data = make_inputs(args.device)
    if args.estimators:
        return family_table(data, args.device, args.repeats)
    buffer = copy_buffer(args.device)
    fused = _median_ms(lambda: fused_step(*data), args.device, args.repeats)
    eager = _median_ms(lambda: eager_step(*data), args.device, args.repeats)
    copy = _median_ms(buffer.clone, args.device, args.repeats)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, N = {N}, float32, dr + noise correction")
    print(f"fused forward+backward   {fused:8.2f} ms")
    print(f"eager torch + autograd   {eager:8.2f} ms   (fused is {eager / fused:.1f}x faster)")
    gb = N * BYTES_PER_ROW / 1e9
    print(f"copy of {gb:.3f} GB traffic {copy:8.2f} ms   (fused / copy = {fused / copy:.2f})")


def _interleaved_medians_ms(fns: dict, device: str, repeats: int) -> dict:
    """Medians of each function, timed in rounds that call every function once (in turn), so
    that load drifting on a shared machine reaches all of them alike."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for fn in fns.values():
        fn()
    sync()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def family_bytes_per_row(estimator: str) -> int:
    """Bytes the fused pass must move per row: sg_ips reads no imputation logits and writes no
    gradient for them (17 B); sndr reads observed and propensity a second time (+5 B)."""
    if estimator == "sg_ips":
        return 3 * 4 + 1 + 4
    return BYTES_PER_ROW + (5 if estimator == "sndr" else 0)


def family_table(data, device: str, repeats: int) -> None:
    """Medians of fused and eager forward + backward per estimator, each round timing the
    estimator's fused step, dr's fused step, the estimator's eager step and a copy of the bytes
    the fused pass must move (the memory floor) in turn."""
    print(f"device {device}, torch threads {torch.get_num_threads()}, N = {N}, float32, noise correction on")
    print(f"{'estimator':10s} {'fused ms':>9s} {'dr ms':>7s} {'/ dr':>6s} {'eager ms':>9s} {'eager/fused':>11s} "
          f"{'copy ms':>8s} {'fused/copy':>10s}")
    for estimator in NEW_ESTIMATORS:
        buffer = torch.empty(N * family_bytes_per_row(estimator) // 2, dtype=torch.uint8, device=device)
        t = _interleaved_medians_ms({
            "fused": functools.partial(family_fused_step, estimator, *data),
            "dr": functools.partial(family_fused_step, "dr", *data),
            "eager": functools.partial(eager_family_step, estimator, *data),
            "copy": buffer.clone,
        }, device, repeats)
        print(f"{estimator:10s} {t['fused']:9.2f} {t['dr']:7.2f} {t['fused'] / t['dr']:6.2f} {t['eager']:9.2f} "
              f"{t['eager'] / t['fused']:11.1f} {t['copy']:8.2f} {t['fused'] / t['copy']:10.2f}")


if __name__ == "__main__":
    main()
