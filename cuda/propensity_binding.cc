// pybind11 glue of the CUDA propensity kernel; the argument types are bound by _core.
#include "binding_util.h"
#include "propensity.h"

namespace fk {

void bind_propensity_cuda(py::module_& m) {
  m.def(
      "propensity_loss",
      [](PropensityArrays arrays, PropensityOptions options, int device, uintptr_t stream) {
        py::gil_scoped_release no_gil;
        propensity_loss_cuda(arrays, options, device, stream);
      },
      py::arg("arrays"), py::arg("options"), py::arg("device"), py::arg("stream"),
      "Propensity-weighted, noise-aware loss on CUDA, on the given stream (see fairkernels.propensity_loss).");
}

}  // namespace fk
