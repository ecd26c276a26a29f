// Allocation policy of large fresh outputs: transparent huge pages for the span a kernel is
// about to write for the first time.
//
// A fresh output (np.empty / torch.empty) is untouched virtual memory: every 4 KiB page costs a
// page fault (and the kernel's zeroing) on the first write, which made a fresh [8192, 4096]
// float32 result 5-6x slower than writing into an existing buffer.  madvise(MADV_HUGEPAGE) on
// the 2 MiB-aligned part of the span before that first write lets the kernel fault it in as
// 2 MiB pages (512x fewer faults).  The write itself stays with the kernels' parallel loops,
// so the threads that write a page are the ones that fault it in (no separate memset).
// Nothing here knows about Python; the policy (threshold, environment variable, THP mode)
// lives in python/fairkernels/_memory.py.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace fk {

// Size of a transparent huge page on x86-64 and arm64 with 4 KiB base pages.
constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;

// The largest 2 MiB-aligned span inside [address, address + bytes); empty (begin == end) when
// there is none.  Only whole huge pages inside the buffer are ever advised: the head and tail
// partial pages may share a huge page with other allocations.
struct HugePageSpan {
  std::uintptr_t begin = 0;
  std::uintptr_t end = 0;
  std::size_t bytes() const { return end - begin; }
};
HugePageSpan huge_page_span(std::uintptr_t address, std::size_t bytes);

// What advise_huge_pages did.
struct HugePageAdvice {
  HugePageSpan span;        // the span it advised (empty: nothing to advise)
  bool supported = false;   // this build can advise (Linux with MADV_HUGEPAGE)
  int error = 0;            // errno of a failed madvise (0: success or nothing tried)
  bool advised() const { return supported && error == 0 && span.bytes() > 0; }
};

// madvise(MADV_HUGEPAGE) on huge_page_span(p, bytes).  Never throws and never fails the
// caller: where the OS has no transparent huge pages it does nothing and says so.
HugePageAdvice advise_huge_pages(void* p, std::size_t bytes);

// The selected value of a sysfs choice file such as "always [madvise] never" ("madvise"), or ""
// when the file cannot be read or has no bracketed value (not Linux, THP compiled out, no /sys).
std::string sysfs_choice(const std::string& path);

// /sys/kernel/mm/transparent_hugepage/enabled and .../defrag, as sysfs_choice reads them.
std::string transparent_huge_pages_mode();
std::string transparent_huge_pages_defrag();

}  // namespace fk
