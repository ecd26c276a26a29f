// pybind11 glue of the bandits family: its argument types (shared with the CUDA module), the
// CPU kernels and two test entry points of the episode sampler.
#include <pybind11/stl.h>

#include <vector>

#include "bandits.h"
#include "bandits_core.h"
#include "binding_util.h"

namespace fk {

void bind_bandits_types(py::module_& m) {
  py::enum_<BoundKind>(m, "BoundKind", "Confidence bound of the grid arms.")
      .value("ucb1", BoundKind::kUcb1)
      .value("hoeffding", BoundKind::kHoeffding)
      .value("bernstein", BoundKind::kBernstein);
  py::enum_<SelectRule>(m, "SelectRule", "How a learner picks its arm.")
      .value("ofs", SelectRule::kOfs)
      .value("ucb", SelectRule::kUcb)
      .value("primal_dual", SelectRule::kPrimalDual)
      .value("fixed", SelectRule::kFixed);

  py::class_<BoundOptions>(m, "BoundOptions", "fk::BoundOptions (cpp/bandits.h).")
      .def(py::init<>())
      .def_readwrite("kind", &BoundOptions::kind)
      .def_readwrite("alpha", &BoundOptions::alpha)
      .def_readwrite("delta", &BoundOptions::delta)
      .def_readwrite("horizon", &BoundOptions::horizon);

  py::class_<BanditState> state(m, "BanditState", "fk::BanditState (cpp/bandits.h).");
  state.def(py::init<>())
      .def_readwrite("n_learners", &BanditState::n_learners)
      .def_readwrite("n_arms", &BanditState::n_arms)
      .def_readwrite("n_constraints", &BanditState::n_constraints);
  def_address(state, "count", &BanditState::count);
  def_address(state, "rounds", &BanditState::rounds);
  def_address(state, "total", &BanditState::total);
  def_address(state, "sum", &BanditState::sum);
  def_address(state, "sumsq", &BanditState::sumsq);
  def_address(state, "mean", &BanditState::mean);
  def_address(state, "inv_sqrt", &BanditState::inv_sqrt);

  py::class_<UpdateArgs> update(m, "UpdateArgs", "fk::UpdateArgs (cpp/bandits.h).");
  update.def(py::init<>()).def_readwrite("weight", &UpdateArgs::weight);
  def_address(update, "arms", &UpdateArgs::arms);
  def_address(update, "rewards", &UpdateArgs::rewards);
  def_address(update, "residuals", &UpdateArgs::residuals);
  def_address(update, "weights", &UpdateArgs::weights);
  def_address(update, "lambdas", &UpdateArgs::lambdas);
  def_address(update, "eta", &UpdateArgs::eta);
  def_address(update, "status", &UpdateArgs::status);

  py::class_<SelectArgs> select(m, "SelectArgs", "fk::SelectArgs (cpp/bandits.h).");
  select.def(py::init<>()).def_readwrite("rule", &SelectArgs::rule).def_readwrite("bound", &SelectArgs::bound);
  def_address(select, "lambdas", &SelectArgs::lambdas);
  def_address(select, "arms", &SelectArgs::arms);
  def_address(select, "ucb", &SelectArgs::ucb);
  def_address(select, "lcb", &SelectArgs::lcb);

  py::class_<EnvTable> env(m, "EnvTable", "fk::EnvTable (cpp/bandits.h); table addresses are host or device.");
  env.def(py::init<>())
      .def_readwrite("n_arms", &EnvTable::n_arms)
      .def_readwrite("n_columns", &EnvTable::n_columns)
      .def_readwrite("p0", &EnvTable::p0)
      .def_readwrite("beta", &EnvTable::beta)
      .def_readwrite("kappa", &EnvTable::kappa)
      .def_readwrite("cohort", &EnvTable::cohort)
      .def_readwrite("cost", &EnvTable::cost)
      .def_readwrite("eps", &EnvTable::eps)
      .def_readwrite("service", &EnvTable::service)
      .def_readwrite("rho_min", &EnvTable::rho_min);
  def_address(env, "columns", &EnvTable::columns);
  def_address(env, "accept", &EnvTable::accept);
  def_address(env, "precision", &EnvTable::precision);

  py::class_<EpisodeArgs> episode(m, "EpisodeArgs", "fk::EpisodeArgs (cpp/bandits.h).");
  episode.def(py::init<>())
      .def_readwrite("n_learners", &EpisodeArgs::n_learners)
      .def_readwrite("n_rounds", &EpisodeArgs::n_rounds)
      .def_readwrite("n_buckets", &EpisodeArgs::n_buckets)
      .def_readwrite("seed", &EpisodeArgs::seed)
      .def_readwrite("bound", &EpisodeArgs::bound);
  def_address(episode, "stream_ids", &EpisodeArgs::stream_ids);
  def_address(episode, "rules", &EpisodeArgs::rules);
  def_address(episode, "fixed_arms", &EpisodeArgs::fixed_arms);
  def_address(episode, "eta", &EpisodeArgs::eta);
  def_address(episode, "reward_trace", &EpisodeArgs::reward_trace);
  def_address(episode, "violation_trace", &EpisodeArgs::violation_trace);
  def_address(episode, "residual_trace", &EpisodeArgs::residual_trace);
  def_address(episode, "pulls", &EpisodeArgs::pulls);
  def_address(episode, "final_share", &EpisodeArgs::final_share);
}

void bind_bandits(py::module_& m) {
  // Arguments are taken by value: the GIL is released while the kernel runs.
  m.def(
      "bandit_update",
      [](BanditState state, UpdateArgs args) {
        py::gil_scoped_release no_gil;
        bandit_update_cpu(state, args);
      },
      py::arg("state"), py::arg("args"), "Adds one observation per learner (see fairkernels.bandits.GridBounds.update).");
  m.def(
      "bandit_select",
      [](BanditState state, SelectArgs args) {
        py::gil_scoped_release no_gil;
        bandit_select_cpu(state, args);
      },
      py::arg("state"), py::arg("args"), "Bounds and selection rule in one pass (see fairkernels.bandits.GridBounds.select).");
  m.def(
      "bandit_episode",
      [](EnvTable env, EpisodeArgs args) {
        py::gil_scoped_release no_gil;
        bandit_episode_cpu(env, args);
      },
      py::arg("env"), py::arg("args"), "Fused closed-loop episodes (see fairkernels.bandits.run_episodes).");
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
