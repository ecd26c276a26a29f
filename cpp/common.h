// Shared plumbing of the C++ core: dtype codes, argument checks and the parallel loop.
// Kernels include this header only; nothing here knows about Python.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fk {

// Element types a kernel may be handed.  The Python layer maps library dtypes onto these
// codes; the numeric values are part of the binding contract (python/fairkernels/_arrays.py).
enum class DType : int { kBool = 0, kUInt8 = 1, kFloat16 = 2, kBFloat16 = 3, kFloat32 = 4, kFloat64 = 5, kInt64 = 6 };

// Raised for arguments that reach the core in an invalid state.  pybind11 maps
// std::invalid_argument to ValueError, so the Python user sees a clear message.
inline void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

// Work is split into fixed-size chunks whose boundaries never depend on the number of
// threads: reductions combine per-chunk partials in chunk order, so results are bit-identical
// whatever OMP_NUM_THREADS says.
template <typename Body>
void parallel_chunks(int64_t n_items, int64_t chunk, Body&& body) {
  const int64_t n_chunks = (n_items + chunk - 1) / chunk;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n_chunks > 1)
#endif
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t begin = c * chunk;
    const int64_t end = begin + chunk < n_items ? begin + chunk : n_items;
    body(c, begin, end);
  }
}

}  // namespace fk
