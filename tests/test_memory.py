"""Tests of the huge-page allocation policy of fresh outputs (cpp/memory.*, fairkernels._memory).

The policy must never change a result (bit for bit against the policy off), must do nothing
for buffers below 2 MiB, must advise only whole 2 MiB pages inside unaligned buffers, and must
decide correctly under every THP mode (the mode is injected: /sys cannot be changed here).  The
real madvise call is checked on this machine through the VmFlags of /proc/self/smaps.
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fairkernels
from fairkernels import _core, _memory
from fairkernels.bandits import GridBounds

MiB = 1 << 20
HUGE = _memory.HUGE_PAGE_BYTES
THP_MODE = _core.transparent_huge_pages_mode()
linux_thp = pytest.mark.skipif(
    not sys.platform.startswith("linux") or THP_MODE == "",
    reason="needs Linux with transparent huge pages compiled in",
)


# ---- the span: whole huge pages inside the buffer only ------------------------------------


@pytest.mark.parametrize(
    "address, nbytes, expected",
    [
        (0, HUGE, (0, HUGE)),  # exactly one aligned huge page
        (HUGE, 3 * HUGE, (HUGE, 3 * HUGE)),
        (HUGE + 64, 3 * HUGE, (2 * HUGE, 2 * HUGE)),  # unaligned start: head dropped, tail too
        (HUGE - 16, HUGE + 32, (HUGE, HUGE)),  # straddles one boundary with a whole page inside
        (16, HUGE, (0, 0)),  # 2 MiB but unaligned: no whole page inside
        (HUGE + 4096, 2 * HUGE - 8192, (0, 0)),
        (0, HUGE - 1, (0, 0)),  # below the threshold
        (0, 0, (0, 0)),
        (2**64 - HUGE, HUGE + 1, (0, 0)),  # would wrap around the address space
    ],
)
def test_span_holds_only_whole_huge_pages(address, nbytes, expected):
    assert _core.huge_page_span(address, nbytes) == expected


def test_span_of_random_buffers_is_aligned_and_inside():
    rng = np.random.default_rng(0)
    for _ in range(1000):
        address = int(rng.integers(0, 2**46))
        nbytes = int(rng.integers(0, 64 * MiB))
        begin, size = _core.huge_page_span(address, nbytes)
        if size == 0:
            # nothing advised only when no aligned huge page fits
            first = -(-address // HUGE) * HUGE
            assert first + HUGE > address + nbytes
            continue
        assert begin % HUGE == 0 and size % HUGE == 0
        assert address <= begin and begin + size <= address + nbytes
        assert begin - address < HUGE and address + nbytes - (begin + size) < HUGE  # the largest such span


# ---- the decision under each THP mode and the environment variable ------------------------


def policy(mode: str, environ: dict | None = None) -> _memory.HugePagePolicy:
    return _memory.read_policy(mode_reader=lambda: mode, defrag_reader=lambda: "madvise", environ=environ or {})


@pytest.mark.parametrize("mode, active", [("always", True), ("madvise", True), ("never", False), ("", False)])
def test_decision_follows_the_thp_mode(mode, active):
    p = policy(mode)
    assert p.active is active
    assert p.should_advise(HUGE) is active
    assert p.should_advise(64 * MiB) is active
    assert not p.should_advise(HUGE - 1)  # small outputs: nothing to do, in any mode
    assert not p.should_advise(0)


@pytest.mark.parametrize("value, enabled", [(None, True), ("1", True), ("", True), ("yes", True), ("0", False),
                                            (" 0 ", False)])
def test_environment_variable_turns_the_policy_off(value, enabled):
    environ = {} if value is None else {_memory.ENV_VAR: value}
    p = policy("madvise", environ)
    assert p.enabled is enabled
    assert p.should_advise(64 * MiB) is enabled


@pytest.mark.parametrize("mode", ["always", "madvise", "never", ""])
def test_describe_reports_mode_and_state(mode):
    with _memory.policy_override(mode=mode, enabled=True):
        info = _memory.describe()
    assert info["thp_enabled"] == (mode or "unknown")
    assert info["policy"].startswith("active" if mode in ("always", "madvise") else "inactive")
    with _memory.policy_override(mode=mode, enabled=False):
        assert _memory.describe()["policy"].startswith("off")


def test_override_is_restored():
    before = _memory.current_policy()
    with _memory.policy_override(enabled=not before.enabled, mode="never") as inside:
        assert _memory.current_policy() == inside != before
    assert _memory.current_policy() == before


@pytest.mark.parametrize(
    "text, choice",
    [("always [madvise] never\n", "madvise"), ("[always] madvise never\n", "always"),
     ("always madvise [never]", "never"), ("always defer defer+madvise [madvise] never\n", "madvise"),
     ("no brackets here\n", ""), ("", "")],
)
def test_sysfs_choice_reads_the_bracketed_value(tmp_path, text, choice):
    path = tmp_path / "enabled"
    path.write_text(text)
    assert _core.sysfs_choice(str(path)) == choice


def test_sysfs_choice_of_a_missing_file_is_empty(tmp_path):
    assert _core.sysfs_choice(str(tmp_path / "missing")) == ""


def test_machine_mode_is_one_of_the_kernel_values():
    assert THP_MODE in ("always", "madvise", "never", "")
    assert _core.transparent_huge_pages_defrag() in ("always", "defer", "defer+madvise", "madvise", "never", "")


# ---- the real madvise call, on this machine -----------------------------------------------


def vm_flags_at(address: int) -> list[str]:
    """VmFlags of the mapping of this process that holds address (from /proc/self/smaps)."""
    flags, inside = None, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and head == "VmFlags:":
            flags = line.split()[1:]
            break
    assert flags is not None, f"no mapping holds {address:#x}"
    return flags


def mapping_address(buffer: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


@linux_thp
@pytest.mark.parametrize("offset", [0, 64, 4096 + 8])
def test_madvise_marks_the_span_and_keeps_the_data(offset):
    size = 12 * MiB
    with mmap.mmap(-1, size + HUGE) as buffer:  # anonymous, untouched
        base = mapping_address(buffer)
        start = -(-base // HUGE) * HUGE + offset  # an aligned or deliberately unaligned buffer
        result = _core.advise_huge_pages(start, size)
        assert result["supported"] and result["error"] == 0 and result["advised"]
        assert result["begin"] % HUGE == 0 and result["begin"] >= start
        assert result["bytes"] == (size if offset == 0 else size - HUGE)
        assert "hg" in vm_flags_at(result["begin"])  # MADV_HUGEPAGE took effect on the span
        assert "hg" in vm_flags_at(result["begin"] + result["bytes"] - 1)
        if offset:
            assert "hg" not in vm_flags_at(start)  # the unaligned head is left alone
        view = np.frombuffer(buffer, dtype=np.uint8)
        view[start - base:start - base + size] = 7  # first touch after the advice
        assert np.all(view[start - base:start - base + size] == 7)
        del view


@linux_thp
def test_madvise_of_a_small_buffer_does_nothing():
    with mmap.mmap(-1, HUGE) as buffer:
        result = _core.advise_huge_pages(mapping_address(buffer) + 128, HUGE - 256)
        assert result["bytes"] == 0 and not result["advised"] and result["error"] == 0
        assert "hg" not in vm_flags_at(mapping_address(buffer))


def test_madvise_of_unmapped_memory_reports_instead_of_raising():
    buffer = mmap.mmap(-1, 3 * HUGE)
    address = mapping_address(buffer)
    buffer.close()  # unmapped now: madvise answers ENOMEM
    result = _core.advise_huge_pages(address, 3 * HUGE)
    assert not result["advised"]
    if result["supported"]:
        assert result["error"] != 0


@linux_thp
def test_fresh_torch_outputs_get_the_advice_only_when_the_policy_is_on():
    torch = pytest.importorskip("torch")
    # 64 MiB: above glibc's largest mmap threshold, so each output is a fresh mapping.
    rewards = torch.zeros(16_384)
    mask = torch.ones(16_384, 1024, dtype=torch.bool)
    with _memory.policy_override(enabled=True, mode="madvise"):
        on = fairkernels.group_advantages(rewards, group_size=16, mask=mask)
        assert "hg" in vm_flags_at(on.data_ptr() + on.nbytes // 2)
    with _memory.policy_override(enabled=False):
        off = fairkernels.group_advantages(rewards, group_size=16, mask=mask)
        assert "hg" not in vm_flags_at(off.data_ptr() + off.nbytes // 2)
    with _memory.policy_override(enabled=True, mode="never"):
        never = fairkernels.group_advantages(rewards, group_size=16, mask=mask)
        assert "hg" not in vm_flags_at(never.data_ptr() + never.nbytes // 2)


# ---- the policy never changes a result -----------------------------------------------------


def advantage_cases(lib):
    rng = np.random.default_rng(1)
    n, t = 3 * 1021, 997  # odd sizes: outputs neither 2 MiB multiples nor aligned to them
    rewards = (rng.random(n) < 0.4).astype(np.float32)
    rewards[::37] = np.nan
    mask = rng.random((n, t)) < 0.8
    logp = rng.normal(size=(n, t)).astype(np.float32)
    ids = rng.permutation(n) // 7
    convert = lib or (lambda x: x)
    base = dict(rewards=convert(rewards), mask=convert(mask))
    yield dict(base, group_size=3)
    yield dict(base, group_ids=convert(ids), token_logp=convert(logp), beta_rank=0.25)
    yield dict(base, group_size=1021, token_logp=convert(logp), beta_rank=0.5, scale="batch")
    yield dict(rewards=convert(rewards.astype(np.float64)), mask=convert(mask), group_ids=convert(ids),
               scale="none")


def run_under_every_policy(fn):
    """fn()'s results with the policy off, on (madvise), and under modes always / never."""
    results = []
    for enabled, mode in [(False, None), (True, "madvise"), (True, "always"), (True, "never")]:
        with _memory.policy_override(enabled=enabled, mode=mode):
            out = fn()
        outputs = out if isinstance(out, tuple) else (out,)
        results.append([x.numpy() if hasattr(x, "numpy") else np.asarray(x) for x in outputs if x is not None])
    return results


def assert_bitwise_equal(results):
    reference = results[0]
    for other in results[1:]:
        assert len(other) == len(reference)
        for a, b in zip(reference, other):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes()  # bit for bit, NaN payloads included


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_advantages_identical_with_and_without_the_policy(library):
    lib = None
    if library == "torch":
        torch = pytest.importorskip("torch")
        lib = torch.from_numpy
    for kwargs in advantage_cases(lib):
        results = run_under_every_policy(lambda kwargs=kwargs: fairkernels.group_advantages(**kwargs))
        assert results[0][0].nbytes > 2 * HUGE  # large enough for the policy to act
        assert_bitwise_equal(results)


@pytest.mark.parametrize("library", ["numpy", "torch"])
@pytest.mark.parametrize("estimator, reduction", [("dr", "none"), ("ips", "mean"), ("snips", "none")])
def test_propensity_identical_with_and_without_the_policy(library, estimator, reduction):
    rng = np.random.default_rng(2)
    n = 1_000_003
    arrays = [rng.normal(size=n) * 3, (rng.random(n) < 0.4) * 1.0, rng.random(n) < 0.3,
              rng.uniform(0.05, 1.0, n), rng.normal(size=n)]
    arrays = [a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays]
    if library == "torch":
        torch = pytest.importorskip("torch")
        arrays = [torch.from_numpy(a) for a in arrays]
    logits, labels, observed, propensity, imputed = arrays

    def call():
        return fairkernels.propensity_loss(logits, labels, observed, propensity,
                                           imputed if estimator == "dr" else None, estimator=estimator,
                                           rho10=0.1, rho01=0.2, reduction=reduction, return_grad=True)

    assert_bitwise_equal(run_under_every_policy(call))


@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_bandit_bounds_identical_with_and_without_the_policy(library):
    B, K, M = 2048, 101, 2  # lcb [B, M, K] float64: 3.3 MB
    like = None
    if library == "torch":
        torch = pytest.importorskip("torch")
        like = torch.zeros(1)
    rng = np.random.default_rng(3)
    arms, rewards, residuals = rng.integers(0, K, (30, B)), rng.random((30, B)), rng.uniform(-0.3, 0.2, (30, B, M))

    def call():
        state = GridBounds(B, K, M, like=like)
        convert = (lambda x: x) if like is None else sys.modules["torch"].from_numpy
        for t in range(30):
            state.update(convert(arms[t]), convert(rewards[t]), convert(residuals[t]), weight=100.0)
        return (state.select("ofs"), *state.bounds())

    results = run_under_every_policy(call)
    assert results[0][2].nbytes > HUGE
    assert_bitwise_equal(results)


def test_environment_variable_in_a_fresh_process(tmp_path):
    """FAIRKERNELS_HUGEPAGES=0 in a new process: the policy reads it, and the result equals this
    process's (policy on) bit for bit."""
    script = (
        "import json, sys, numpy as np, fairkernels\n"
        "from fairkernels import _memory\n"
        "rng = np.random.default_rng(4)\n"
        "r = (rng.random(4096) < 0.4).astype(np.float32); m = rng.random((4096, 700)) < 0.8\n"
        "lp = rng.normal(size=(4096, 700)).astype(np.float32)\n"
        "np.save(sys.argv[1], fairkernels.group_advantages(r, group_size=16, mask=m, token_logp=lp, beta_rank=0.25))\n"
        "print(json.dumps(_memory.describe()))\n"
    )
    env = dict(os.environ, FAIRKERNELS_HUGEPAGES="0")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "off.npy")], env=env, check=True,
                         capture_output=True, text=True)
    assert json.loads(out.stdout)["policy"] == "off (FAIRKERNELS_HUGEPAGES=0)"
    rng = np.random.default_rng(4)
    r = (rng.random(4096) < 0.4).astype(np.float32)
    m = rng.random((4096, 700)) < 0.8
    lp = rng.normal(size=(4096, 700)).astype(np.float32)
    with _memory.policy_override(enabled=True, mode="madvise"):
        here = fairkernels.group_advantages(r, group_size=16, mask=m, token_logp=lp, beta_rank=0.25)
    assert np.load(tmp_path / "off.npy").tobytes() == here.tobytes()


def test_info_command_reports_the_huge_page_settings(capsys):
    from fairkernels.cli import main

    assert main(["info"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[: printed.rindex("}") + 1])
    assert report["huge_pages"]["thp_enabled"] == (THP_MODE or "unknown")
    assert report["huge_pages"]["threshold_bytes"] == 2 * MiB
    assert report["huge_pages"]["policy"] == _memory.describe()["policy"]
