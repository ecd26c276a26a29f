// The CPU module fairkernels._core: one bind_* function per kernel family.
#include <pybind11/pybind11.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace fk {
void bind_advantage(pybind11::module_& m);
void bind_propensity(pybind11::module_& m);
void bind_bandits(pybind11::module_& m);
void bind_memory(pybind11::module_& m);
void bind_sampler(pybind11::module_& m);
}  // namespace fk

PYBIND11_MODULE(_core, m) {
  m.doc() = "fairkernels CPU kernels (C++17).";
  fk::bind_advantage(m);
  fk::bind_propensity(m);
  fk::bind_bandits(m);
  fk::bind_memory(m);
  fk::bind_sampler(m);
  m.def("openmp_threads", []() {
#if defined(_OPENMP)
        return omp_get_max_threads();
#else
        return 1;
#endif
      },
        "Threads the CPU kernels use (OMP_NUM_THREADS).");
}
