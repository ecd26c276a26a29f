#include "advantage.cuh"
#include "advantage_binding.h"

namespace fk {

void bind_advantage_cuda(py::module_& m) {
  m.def(
      "group_advantages",
      [](const py::dict& args) {
        const auto [arrays, options] = advantage_call_from_dict(args);
        const int device = get_arg<int>(args, "device");
        const uintptr_t stream = get_arg<uintptr_t>(args, "stream");
        py::gil_scoped_release no_gil;
        group_advantages_cuda(arrays, options, device, stream);
      },
      py::arg("args"), "Group-relative advantages on CUDA (see fairkernels.group_advantages).");
}

}  // namespace fk
