#include "propensity_binding.h"

namespace fk {

void bind_propensity(py::module_& m) {
  m.def(
      "propensity_loss",
      [](const py::dict& args) {
        const auto [arrays, options] = propensity_call_from_dict(args);
        py::gil_scoped_release no_gil;
        propensity_loss_cpu(arrays, options);
      },
      py::arg("args"), "Propensity-weighted, noise-aware loss (see fairkernels.propensity_loss).");
}

}  // namespace fk
