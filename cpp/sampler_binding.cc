// Benchmark entry point of the episode's sampler floor (bandits_sampler.h); a binding file of
// its own so that the bandits bindings stay as they are.
#include "bandits_binding.h"
#include "bandits_sampler.h"

namespace fk {

void bind_sampler(py::module_& m) {
  m.def(
      "sampler_rounds",
      [](const py::dict& args) {
        const EnvTable env = env_table_from_dict(args);
        const int64_t* pulls = get_pointer<const int64_t>(args, "pulls");
        const int64_t n_learners = get_arg<int64_t>(args, "n_learners");
        const uint64_t seed = get_arg<uint64_t>(args, "seed");
        const bool parallel = get_arg<bool>(args, "parallel");
        py::gil_scoped_release no_gil;
        return sampler_rounds_cpu(env, pulls, n_learners, seed, parallel);
      },
      py::arg("args"),
      "Benchmarks: the fused episode's environment draws alone (5 Binomial draws per learner-round), "
      "learner b pulls[b, k] rounds on arm k ([B, K] int64); returns the sum of rewards.");
}

}  // namespace fk
