"""Allocation policy of large fresh outputs: transparent huge pages before the first write.

A fresh output (``np.empty`` / ``torch.empty``) is untouched virtual memory, and on Linux its
first write faults it in page by page: with 4 KiB pages that is one fault (and one zeroing) per
4 KiB, which measured as most of the cost of a large fresh result.  ``advise_fresh`` asks the
OS for 2 MiB pages (``madvise(MADV_HUGEPAGE)`` on the 2 MiB-aligned part of the buffer) before
the kernel's own parallel loop writes it, so each thread faults in the pages it writes, 512x
fewer times.

The policy is active when
  * ``FAIRKERNELS_HUGEPAGES`` is not ``0`` (read once, at the first allocation), and
  * the machine's transparent-huge-page mode is ``always`` or ``madvise``; under ``never`` the
    advice has no effect, and where the mode cannot be read (not Linux) nothing is done.
Buffers under 2 MiB are left alone (no whole huge page fits).  The advice never changes a
result and never raises: where the OS refuses it, the memory keeps its 4 KiB pages.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional

from . import _core

HUGE_PAGE_BYTES: int = _core.huge_page_bytes  # 2 MiB
ENV_VAR = "FAIRKERNELS_HUGEPAGES"
ADVISING_MODES = ("always", "madvise")  # THP modes under which MADV_HUGEPAGE has an effect


@dataclass(frozen=True)
class HugePagePolicy:
    """What the policy knows about this process and machine."""

    enabled: bool  # FAIRKERNELS_HUGEPAGES != "0"
    mode: str  # THP mode: "always", "madvise", "never", or "" (unknown / not Linux)
    defrag: str  # THP defrag setting ("" when unknown)

    @property
    def active(self) -> bool:
        return self.enabled and self.mode in ADVISING_MODES

    def should_advise(self, nbytes: int) -> bool:
        """True when a fresh buffer of nbytes gets the huge-page advice."""
        return self.active and nbytes >= HUGE_PAGE_BYTES


def enabled_by_environment(environ: Optional[dict] = None) -> bool:
    """FAIRKERNELS_HUGEPAGES=0 turns the policy off; unset or anything else leaves it on."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "").strip()
    return value != "0"


def read_policy(
    mode_reader: Callable[[], str] = _core.transparent_huge_pages_mode,
    defrag_reader: Callable[[], str] = _core.transparent_huge_pages_defrag,
    environ: Optional[dict] = None,
) -> HugePagePolicy:
    """The policy from the environment and the THP mode (the readers are injectable: tests
    cannot change /sys)."""
    return HugePagePolicy(enabled_by_environment(environ), mode_reader(), defrag_reader())


@functools.cache
def _process_policy() -> HugePagePolicy:
    return read_policy()


_override: Optional[HugePagePolicy] = None


def current_policy() -> HugePagePolicy:
    """The policy in force (read once per process; see policy_override for tests)."""
    return _override if _override is not None else _process_policy()


@contextlib.contextmanager
def policy_override(enabled: Optional[bool] = None, mode: Optional[str] = None) -> Iterator[HugePagePolicy]:
    """Runs a block under a modified policy (tests and benchmarks: policy on / off, a THP mode
    this machine does not have).  Not thread-safe: it swaps one module-level value."""
    global _override
    previous = _override
    base = current_policy()
    _override = replace(
        base,
        enabled=base.enabled if enabled is None else enabled,
        mode=base.mode if mode is None else mode,
    )
    try:
        yield _override
    finally:
        _override = previous


def advise_fresh(address: int, nbytes: int) -> None:
    """Applies the policy to a fresh, not yet written CPU buffer [address, address + nbytes)."""
    if current_policy().should_advise(nbytes):
        _core.advise_huge_pages(address, nbytes)


def _nbytes(array: Any) -> int:
    if hasattr(array, "nbytes"):  # numpy; torch tensors also have it since 2.1
        return int(array.nbytes)
    return int(array.numel() * array.element_size())


def advises_fresh_outputs(allocate: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates the output allocator (``_arrays.fresh``): every fresh CPU output it returns
    goes through advise_fresh before any kernel writes it."""

    @functools.wraps(allocate)
    def allocate_and_advise(*args: Any, **kwargs: Any) -> Any:
        v = allocate(*args, **kwargs)
        if not v.on_cuda:
            advise_fresh(v.address, _nbytes(v.array))
        return v

    return allocate_and_advise


def describe() -> dict:
    """What ``fairkernels info`` reports: the machine's THP settings and the policy."""
    policy = current_policy()
    if policy.active:
        state = "active: fresh CPU outputs >= 2 MiB are advised to use huge pages"
    elif not policy.enabled:
        state = f"off ({ENV_VAR}=0)"
    elif policy.mode == "never":
        state = "inactive: transparent huge pages are disabled (never)"
    else:
        state = "inactive: transparent huge pages not available here"
    return {
        "thp_enabled": policy.mode or "unknown",
        "thp_defrag": policy.defrag or "unknown",
        "policy": state,
        "threshold_bytes": HUGE_PAGE_BYTES,
    }
