// pybind11 glue of the CUDA advantage kernel; the argument types are bound by _core.
#include "advantage.cuh"
#include "binding_util.h"

namespace fk {

void bind_advantage_cuda(py::module_& m) {
  m.def(
      "group_advantages",
      [](AdvantageArrays arrays, AdvantageOptions options, int device, uintptr_t stream) {
        py::gil_scoped_release no_gil;
        group_advantages_cuda(arrays, options, device, stream);
      },
      py::arg("arrays"), py::arg("options"), py::arg("device"), py::arg("stream"),
      "Group-relative advantages on CUDA, on the given stream (see fairkernels.group_advantages).");
}

}  // namespace fk
