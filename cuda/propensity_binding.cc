// pybind11 glue of the CUDA propensity kernel (compiled by the host compiler).
#include "propensity_binding.h"

namespace fk {

void bind_propensity_cuda(py::module_& m) {
  m.def(
      "propensity_loss",
      [](const py::dict& args) {
        const auto [arrays, options] = propensity_call_from_dict(args);
        const int device = get_arg<int>(args, "device");
        const uintptr_t stream = get_arg<uintptr_t>(args, "stream");
        py::gil_scoped_release no_gil;
        propensity_loss_cuda(arrays, options, device, stream);
      },
      py::arg("args"), "Propensity-weighted, noise-aware loss on CUDA (see fairkernels.propensity_loss).");
}

}  // namespace fk
