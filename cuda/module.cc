// The CUDA module fairkernels._cuda: one bind_*_cuda function per kernel family, over the
// argument types bound by _core.
// Compiled by the host compiler; kernels live in the .cu files (a static library).
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <string>
#include <utility>

namespace fk {
void bind_advantage_cuda(pybind11::module_& m);
void bind_propensity_cuda(pybind11::module_& m);
void bind_bandits_cuda(pybind11::module_& m);
}  // namespace fk

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fairkernels CUDA kernels.";
  // The argument types (AdvantageArrays, PropensityOptions, ...) are bound once, by _core;
  // importing it registers them for this module too (pybind11 shares types across modules).
  pybind11::module_::import("fairkernels._core");
  m.def(
      "device_count",
      []() -> std::pair<int, std::string> {
        int count = 0;
        const cudaError_t status = cudaGetDeviceCount(&count);
        if (status != cudaSuccess) {
          cudaGetLastError();  // clear the sticky "no driver" error
          return {0, cudaGetErrorString(status)};
        }
        return {count, "ok"};
      },
      "(number of usable CUDA devices, reason when 0)");
  fk::bind_advantage_cuda(m);
  fk::bind_propensity_cuda(m);
  fk::bind_bandits_cuda(m);
}
