// Transparent huge pages for fresh outputs (memory.h).
#include "memory.h"

#include <cerrno>
#include <fstream>
#include <iterator>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fk {

HugePageSpan huge_page_span(std::uintptr_t address, std::size_t bytes) {
  HugePageSpan span;
  if (bytes < kHugePageBytes || address > UINTPTR_MAX - bytes) return span;
  const std::uintptr_t mask = kHugePageBytes - 1;
  const std::uintptr_t begin = (address + mask) & ~mask;
  const std::uintptr_t end = (address + bytes) & ~mask;
  if (begin < end) {
    span.begin = begin;
    span.end = end;
  }
  return span;
}

HugePageAdvice advise_huge_pages(void* p, std::size_t bytes) {
  HugePageAdvice advice;
  advice.span = huge_page_span(reinterpret_cast<std::uintptr_t>(p), bytes);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  advice.supported = true;
  if (advice.span.bytes() == 0) return advice;
  // Advice only: EINVAL (THP compiled out) or ENOMEM (not all mapped) leave the memory usable
  // with 4 KiB pages, so a failure is reported, never raised.
  if (madvise(reinterpret_cast<void*>(advice.span.begin), advice.span.bytes(), MADV_HUGEPAGE) != 0) {
    advice.error = errno;
  }
#endif
  return advice;
}

std::string sysfs_choice(const std::string& path) {
  std::ifstream file(path);
  if (!file) return "";
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const std::size_t open = text.find('[');
  const std::size_t close = open == std::string::npos ? std::string::npos : text.find(']', open);
  if (close == std::string::npos) return "";
  return text.substr(open + 1, close - open - 1);
}

std::string transparent_huge_pages_mode() { return sysfs_choice("/sys/kernel/mm/transparent_hugepage/enabled"); }

std::string transparent_huge_pages_defrag() { return sysfs_choice("/sys/kernel/mm/transparent_hugepage/defrag"); }

}  // namespace fk
