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

    pytest bench/bench_propensity.py --benchmark-only     (pytest-benchmark statistics)
    python bench/bench_propensity.py [--device cuda]      (medians and ratios as a table)
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    data = make_inputs(args.device)
    buffer = copy_buffer(args.device)
    fused = _median_ms(lambda: fused_step(*data), args.device, args.repeats)
    eager = _median_ms(lambda: eager_step(*data), args.device, args.repeats)
    copy = _median_ms(buffer.clone, args.device, args.repeats)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, N = {N}, float32, dr + noise correction")
    print(f"fused forward+backward   {fused:8.2f} ms")
    print(f"eager torch + autograd   {eager:8.2f} ms   (fused is {eager / fused:.1f}x faster)")
    gb = N * BYTES_PER_ROW / 1e9
    print(f"copy of {gb:.3f} GB traffic {copy:8.2f} ms   (fused / copy = {fused / copy:.2f})")


if __name__ == "__main__":
    main()
