// Translation of the Python-side argument dicts into the bandits contract (bandits.h);
// shared by the CPU module (bandits_binding.cc) and the CUDA module (../cuda/bandits_binding.cc).
#pragma once

#include "bandits.h"
#include "binding_util.h"

namespace fk {

inline BanditState bandit_state_from_dict(const py::dict& args) {
  BanditState s;
  s.n_learners = get_arg<int64_t>(args, "n_learners");
  s.n_arms = get_arg<int64_t>(args, "n_arms");
  s.n_constraints = get_arg<int64_t>(args, "n_constraints");
  s.count = get_pointer<double>(args, "count");
  s.rounds = get_pointer<double>(args, "rounds");
  s.total = get_pointer<double>(args, "total");
  s.sum = get_pointer<double>(args, "sum");
  s.sumsq = get_pointer<double>(args, "sumsq");
  s.mean = get_pointer<double>(args, "mean");
  s.inv_sqrt = get_pointer<double>(args, "inv_sqrt");
  return s;
}

inline BoundOptions bound_options_from_dict(const py::dict& args) {
  BoundOptions o;
  o.kind = static_cast<BoundKind>(get_arg<int>(args, "bound"));
  o.alpha = get_arg<double>(args, "alpha");
  o.delta = get_arg<double>(args, "delta");
  o.horizon = get_arg<double>(args, "horizon");
  return o;
}

inline UpdateArgs update_args_from_dict(const py::dict& args) {
  UpdateArgs a;
  a.arms = get_pointer<const int64_t>(args, "arms");
  a.rewards = get_pointer<const double>(args, "rewards");
  a.residuals = get_pointer<const double>(args, "residuals");
  a.weights = get_pointer<const double>(args, "weights");
  a.weight = get_arg<double>(args, "weight");
  a.lambdas = get_pointer<double>(args, "lambdas");
  a.eta = get_pointer<const double>(args, "eta");
  a.status = get_pointer<int64_t>(args, "status");
  return a;
}

inline SelectArgs select_args_from_dict(const py::dict& args) {
  SelectArgs a;
  a.rule = static_cast<SelectRule>(get_arg<int>(args, "rule"));
  a.bound = bound_options_from_dict(args);
  a.lambdas = get_pointer<const double>(args, "lambdas");
  a.arms = get_pointer<int64_t>(args, "arms");
  a.ucb = get_pointer<double>(args, "ucb");
  a.lcb = get_pointer<double>(args, "lcb");
  return a;
}

// Table pointers are host addresses on the CPU and device addresses on CUDA.
inline EnvTable env_table_from_dict(const py::dict& args) {
  EnvTable e;
  e.n_arms = get_arg<int64_t>(args, "n_arms");
  e.accept = get_pointer<const double>(args, "accept");
  e.precision = get_pointer<const double>(args, "precision");
  e.p0 = get_arg<double>(args, "p0");
  e.beta = get_arg<double>(args, "beta");
  e.kappa = get_arg<double>(args, "kappa");
  e.cohort = get_arg<int64_t>(args, "cohort");
  e.cost = get_arg<double>(args, "cost");
  e.eps = get_arg<double>(args, "eps");
  e.service = get_arg<bool>(args, "service");
  e.rho_min = get_arg<double>(args, "rho_min");
  return e;
}

inline EpisodeArgs episode_args_from_dict(const py::dict& args) {
  EpisodeArgs a;
  a.n_learners = get_arg<int64_t>(args, "n_learners");
  a.n_rounds = get_arg<int64_t>(args, "n_rounds");
  a.n_buckets = get_arg<int64_t>(args, "n_buckets");
  a.seed = get_arg<uint64_t>(args, "seed");
  a.stream_ids = get_pointer<const int64_t>(args, "stream_ids");
  a.rules = get_pointer<const int64_t>(args, "rules");
  a.fixed_arms = get_pointer<const int64_t>(args, "fixed_arms");
  a.eta = get_pointer<const double>(args, "eta");
  a.bound = bound_options_from_dict(args);
  a.reward_trace = get_pointer<double>(args, "reward_trace");
  a.violation_trace = get_pointer<double>(args, "violation_trace");
  a.residual_trace = get_pointer<double>(args, "residual_trace");
  a.pulls = get_pointer<double>(args, "pulls");
  a.final_share = get_pointer<double>(args, "final_share");
  return a;
}

}  // namespace fk
