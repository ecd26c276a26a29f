// The CPU module fairkernels._core: the kernels' argument types (bound once, shared with the
// CUDA module) and one bind_* function per kernel family.
#include <pybind11/pybind11.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "binding_util.h"

namespace fk {
void bind_advantage(pybind11::module_& m);
void bind_propensity(pybind11::module_& m);
void bind_bandits(pybind11::module_& m);
void bind_memory(pybind11::module_& m);
void bind_sampler(pybind11::module_& m);

void bind_common_types(py::module_& m) {
  // Value names are the dtype names of numpy / torch, so Python looks them up by name.
  py::enum_<DType>(m, "DType", "Element types a kernel may be handed.")
      .value("bool", DType::kBool)
      .value("uint8", DType::kUInt8)
      .value("float16", DType::kFloat16)
      .value("bfloat16", DType::kBFloat16)
      .value("float32", DType::kFloat32)
      .value("float64", DType::kFloat64)
      .value("int64", DType::kInt64);
}
}  // namespace fk

PYBIND11_MODULE(_core, m) {
  m.doc() = "fairkernels CPU kernels (C++17).";
  fk::bind_common_types(m);
  fk::bind_advantage_types(m);
  fk::bind_propensity_types(m);
  fk::bind_bandits_types(m);
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
