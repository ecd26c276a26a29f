// Python access to the huge-page helpers of memory.h (used by python/fairkernels/_memory.py).
#include <pybind11/pybind11.h>

#include <cstdint>

#include "memory.h"

namespace fk {

namespace py = pybind11;

void bind_memory(py::module_& m) {
  m.def(
      "advise_huge_pages",
      [](std::uintptr_t address, std::size_t bytes) {
        const HugePageAdvice a = advise_huge_pages(reinterpret_cast<void*>(address), bytes);
        py::dict result;
        result["begin"] = a.span.begin;
        result["bytes"] = a.span.bytes();
        result["supported"] = a.supported;
        result["error"] = a.error;
        result["advised"] = a.advised();
        return result;
      },
      py::arg("address"), py::arg("bytes"),
      "madvise(MADV_HUGEPAGE) on the 2 MiB-aligned span of [address, address + bytes); returns what it did "
      "(begin, bytes, supported, error = errno or 0, advised).  Never raises.");
  m.def(
      "huge_page_span",
      [](std::uintptr_t address, std::size_t bytes) {
        const HugePageSpan s = huge_page_span(address, bytes);
        return py::make_tuple(s.begin, s.bytes());
      },
      py::arg("address"), py::arg("bytes"), "(begin, bytes) of the 2 MiB-aligned span inside the buffer.");
  m.def("sysfs_choice", &sysfs_choice, py::arg("path"),
        "Bracketed value of a sysfs choice file ('always [madvise] never' -> 'madvise'); '' if unreadable.");
  m.def("transparent_huge_pages_mode", &transparent_huge_pages_mode,
        "/sys/kernel/mm/transparent_hugepage/enabled ('always', 'madvise', 'never', or '' if unknown).");
  m.def("transparent_huge_pages_defrag", &transparent_huge_pages_defrag,
        "/sys/kernel/mm/transparent_hugepage/defrag ('' if unknown).");
  m.attr("huge_page_bytes") = kHugePageBytes;
}

}  // namespace fk
