// pybind11 glue of the CUDA bandits kernels (bandits.cu); the argument types are bound by _core.
// Each kernel takes the caller's device and current stream after the CPU arguments.
#include "bandits.h"
#include "binding_util.h"

namespace fk {

void bind_bandits_cuda(py::module_& m) {
  m.def(
      "bandit_update",
      [](BanditState state, UpdateArgs args, int device, uintptr_t stream) {
        py::gil_scoped_release no_gil;
        bandit_update_cuda(state, args, device, stream);
      },
      py::arg("state"), py::arg("args"), py::arg("device"), py::arg("stream"),
      "Adds one observation per learner on CUDA; errors are reported in status.");
  m.def(
      "bandit_select",
      [](BanditState state, SelectArgs args, int device, uintptr_t stream) {
        py::gil_scoped_release no_gil;
        bandit_select_cuda(state, args, device, stream);
      },
      py::arg("state"), py::arg("args"), py::arg("device"), py::arg("stream"), "Bounds and selection rule on CUDA.");
  m.def(
      "bandit_episode",
      [](EnvTable env, EpisodeArgs args, int device, uintptr_t stream) {
        py::gil_scoped_release no_gil;
        bandit_episode_cuda(env, args, device, stream);
      },
      py::arg("env"), py::arg("args"), py::arg("device"), py::arg("stream"), "Fused closed-loop episodes on CUDA.");
}

}  // namespace fk
