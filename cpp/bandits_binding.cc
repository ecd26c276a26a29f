#include "bandits_binding.h"

#include <pybind11/stl.h>

#include <vector>

#include "bandits_core.h"

namespace fk {

void bind_bandits(py::module_& m) {
  m.def(
      "bandit_update",
      [](const py::dict& args) {
        const BanditState s = bandit_state_from_dict(args);
        const UpdateArgs a = update_args_from_dict(args);
        py::gil_scoped_release no_gil;
        bandit_update_cpu(s, a);
      },
      py::arg("args"), "Adds one observation per learner (see fairkernels.bandits.GridBounds.update).");
  m.def(
      "bandit_select",
      [](const py::dict& args) {
        const BanditState s = bandit_state_from_dict(args);
        const SelectArgs a = select_args_from_dict(args);
        py::gil_scoped_release no_gil;
        bandit_select_cpu(s, a);
      },
      py::arg("args"), "Bounds and selection rule in one pass (see fairkernels.bandits.GridBounds.select).");
  m.def(
      "bandit_episode",
      [](const py::dict& args) {
        const EnvTable e = env_table_from_dict(args);
        const EpisodeArgs a = episode_args_from_dict(args);
        py::gil_scoped_release no_gil;
        bandit_episode_cpu(e, a);
      },
      py::arg("args"), "Fused closed-loop episodes (see fairkernels.bandits.run_episodes).");
  m.def(
      "philox4x32_10",
      [](uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
        uint32_t c[4] = {c0, c1, c2, c3};
        bandits::philox4x32_10(c, k0, k1);
        return py::make_tuple(c[0], c[1], c[2], c[3]);
      },
      "Philox4x32-10 block (for tests against the published known-answer vectors).");
  m.def(
      "binomial_samples",
      [](double n, double p, uint64_t seed, int64_t count) {
        std::vector<double> out(count);
        for (int64_t i = 0; i < count; ++i) {
          bandits::RoundStream rng(seed, 0, static_cast<uint64_t>(i));
          out[i] = bandits::binomial(n, p, rng);
        }
        return out;
      },
      "Binomial(n, p) draws from the episode kernel's sampler, one Philox round stream each (tests).");
}

}  // namespace fk
