#include "advantage_binding.h"

namespace fk {

void bind_advantage(py::module_& m) {
  m.def(
      "group_advantages",
      [](const py::dict& args) {
        const auto [arrays, options] = advantage_call_from_dict(args);
        py::gil_scoped_release no_gil;
        group_advantages_cpu(arrays, options);
      },
      py::arg("args"), "Group-relative advantages (see fairkernels.group_advantages).");
}

}  // namespace fk
