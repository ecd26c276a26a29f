// Benchmark entry point of the episode's sampler floor (bandits_sampler.h); a binding file of
// its own so that the bandits bindings stay as they are.  The table is the EnvTable struct
// bound by bandits_binding.cc (fairkernels.bandits.episodes.kernel_table fills it).
#include "bandits_sampler.h"
#include "binding_util.h"

namespace fk {

void bind_sampler(py::module_& m) {
  m.def(
      "sampler_rounds",
      [](EnvTable env, uintptr_t pulls, int64_t n_learners, uint64_t seed, bool parallel) {
        py::gil_scoped_release no_gil;
        return sampler_rounds_cpu(env, reinterpret_cast<const int64_t*>(pulls), n_learners, seed, parallel);
      },
      py::arg("env"), py::arg("pulls"), py::arg("n_learners"), py::arg("seed"), py::arg("parallel"),
      "Benchmarks: the fused episode's environment draws alone (5 Binomial draws per learner-round), "
      "learner b pulls[b, k] rounds on arm k ([B, K] int64 address); returns the sum of rewards.");
}

}  // namespace fk
