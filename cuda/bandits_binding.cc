// pybind11 glue of the CUDA bandits kernels (bandits.cu); same argument dicts as the CPU module
// plus "device" and "stream" (the caller's current stream).
#include "bandits_binding.h"

namespace fk {

void bind_bandits_cuda(py::module_& m) {
  m.def(
      "bandit_update",
      [](const py::dict& args) {
        const BanditState s = bandit_state_from_dict(args);
        const UpdateArgs a = update_args_from_dict(args);
        const int device = get_arg<int>(args, "device");
        const uintptr_t stream = get_arg<uintptr_t>(args, "stream");
        py::gil_scoped_release no_gil;
        bandit_update_cuda(s, a, device, stream);
      },
      py::arg("args"), "Adds one observation per learner on CUDA; errors are reported in status.");
  m.def(
      "bandit_select",
      [](const py::dict& args) {
        const BanditState s = bandit_state_from_dict(args);
        const SelectArgs a = select_args_from_dict(args);
        const int device = get_arg<int>(args, "device");
        const uintptr_t stream = get_arg<uintptr_t>(args, "stream");
        py::gil_scoped_release no_gil;
        bandit_select_cuda(s, a, device, stream);
      },
      py::arg("args"), "Bounds and selection rule on CUDA.");
  m.def(
      "bandit_episode",
      [](const py::dict& args) {
        const EnvTable e = env_table_from_dict(args);
        const EpisodeArgs a = episode_args_from_dict(args);
        const int device = get_arg<int>(args, "device");
        const uintptr_t stream = get_arg<uintptr_t>(args, "stream");
        py::gil_scoped_release no_gil;
        bandit_episode_cuda(e, a, device, stream);
      },
      py::arg("args"), "Fused closed-loop episodes on CUDA.");
}

}  // namespace fk
