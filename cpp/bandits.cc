// CPU implementation of the bandits contract (bandits.h).  The per-learner arithmetic is in
// bandits_core.h, shared with the CUDA kernels; this file adds validation and the parallel
// loops over learners (fixed chunks: results never depend on the thread count).
#include "bandits.h"

#include <cmath>
#include <string>
#include <vector>

#include "bandits_core.h"

namespace fk {
namespace {

void check_state(const BanditState& s) {
  require(s.n_learners >= 0, "n_learners must be >= 0");
  require(s.n_arms >= 1, "the grid needs at least one threshold");
  require(s.n_constraints >= 0, "n_constraints must be >= 0");
  require(s.n_learners == 0 || (s.count && s.rounds && s.total && s.sum && s.sumsq && s.mean && s.inv_sqrt),
          "bandit state: missing array");
}

bandits::LearnerState learner_state(const BanditState& s, int64_t b) {
  const int64_t K = s.n_arms, V = 1 + s.n_constraints;
  return {s.count + b * K, s.rounds + b * K, s.sum + b * V * K, s.sumsq + b * V * K,
          s.mean + b * V * K, s.inv_sqrt + b * K, 1, K, V};
}

const char* observation_error(int code, double weight) {
  switch (code) {
    case 1: return "arms: chosen arm out of range [0, K)";
    case 2: return "rewards: must be finite and in [0, 1]";
    case 3: return "residuals: must be finite and in [-1, 1]";
    default:
      if (weight > 0.0 && std::isfinite(weight)) {
        return "weight: too large, the learner's total count (a float64 sum of weights) would overflow";
      }
      return "weight: must be finite and > 0";
  }
}

}  // namespace

void check_env_table(const EnvTable& env) {
  require(env.n_arms >= 1 && env.accept && env.precision, "environment table: missing arrays");
  require(env.n_columns >= 0, "environment table: n_columns must be >= 0");
  require(env.columns != nullptr || env.n_columns == 0 || env.n_columns == env.n_arms,
          "environment table: shared thresholds need one column per arm");
  const int64_t width = env.n_columns > 0 ? env.n_columns : env.n_arms;
  if (env.columns != nullptr) {
    for (int64_t i = 0; i < 2 * env.n_arms; ++i) {
      require(env.columns[i] >= 0 && env.columns[i] < width, "environment table: arm column out of range");
    }
  }
  for (int64_t i = 0; i < 2 * width; ++i) {
    require(env.accept[i] >= 0 && env.accept[i] <= 1, "environment table: accept must be in [0, 1]");
    require(env.precision[i] >= 0 && env.precision[i] <= 1, "environment table: precision must be in [0, 1]");
  }
  require(env.p0 > 0 && env.p0 < 1, "p0 must be in (0, 1)");
  require(env.beta >= 0 && env.beta <= 1, "beta must be in [0, 1]");
  require(std::isfinite(env.kappa), "kappa must be finite");
  require(env.cohort >= 1 && env.cohort < (int64_t{1} << 40), "cohort size must be >= 1");
  require(std::isfinite(env.cost) && env.cost >= 0, "cost must be finite and >= 0");
  require(env.eps >= 0 && env.eps <= 1, "eps must be in [0, 1]");
  require(!env.service || (env.rho_min >= 0 && env.rho_min <= 1), "rho_min must be in [0, 1]");
}

void bandit_update_cpu(const BanditState& s, const UpdateArgs& a) {
  check_state(s);
  const int64_t B = s.n_learners, M = s.n_constraints;
  require(B == 0 || (a.arms && a.rewards && (M == 0 || a.residuals)), "update: missing array");
  require(a.lambdas == nullptr || a.eta != nullptr, "update: lambdas need eta");
  // Validate everything first: an invalid observation leaves the state untouched.
  for (int64_t b = 0; b < B; ++b) {
    const double w = a.weights ? a.weights[b] : a.weight;
    const int code = bandits::check_observation(a.arms[b], s.n_arms, a.rewards[b],
                                                M ? a.residuals + b * M : nullptr, M, w, s.total[b]);
    if (code != 0) {
      throw std::invalid_argument(std::string(observation_error(code, w)) + " (learner " + std::to_string(b) + ")");
    }
  }
  parallel_chunks(B, 1024, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const double* h = M ? a.residuals + b * M : nullptr;
      const double w = a.weights ? a.weights[b] : a.weight;
      bandits::observe(learner_state(s, b), s.total + b, a.arms[b], a.rewards[b], h, 1, w);
      if (a.lambdas) bandits::update_lambdas(a.lambdas + b * M, 1, h, 1, M, a.eta[b]);
    }
  });
}

void bandit_select_cpu(const BanditState& s, const SelectArgs& a) {
  check_state(s);
  check_bound_options(a.bound);
  require(a.rule == SelectRule::kOfs || a.rule == SelectRule::kUcb || a.rule == SelectRule::kPrimalDual,
          "rule must be ofs, ucb or primal_dual");
  require(a.rule != SelectRule::kPrimalDual || s.n_constraints == 0 || a.lambdas, "primal_dual needs lambdas");
  require(s.n_learners == 0 || a.arms, "select: missing output");
  const int64_t K = s.n_arms, M = s.n_constraints;
  parallel_chunks(s.n_learners, 256, [&](int64_t, int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const bandits::LearnerState st = learner_state(s, b);
      const bandits::LearnerView view{st.count, st.rounds, st.sum, st.sumsq, st.mean, st.inv_sqrt, 1, K, M};
      a.arms[b] = bandits::choose_arm(view, a.bound, a.rule, s.total[b], a.lambdas ? a.lambdas + b * M : nullptr, 1,
                                      a.ucb ? a.ucb + b * K : nullptr, a.lcb ? a.lcb + b * M * K : nullptr, 1);
    }
  });
}

void bandit_episode_cpu(const EnvTable& env, const EpisodeArgs& a) {
  check_env_table(env);
  check_bound_options(a.bound);
  require(a.n_learners >= 0 && a.n_rounds >= 1 && a.n_buckets >= 1 && a.n_buckets <= a.n_rounds,
          "episode: need n_rounds >= 1 and 1 <= n_buckets <= n_rounds");
  const int64_t B = a.n_learners, K = env.n_arms, M = env.service ? 2 : 1, V = 1 + M;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t r = a.rules[b];
    require(r >= 0 && r <= 3, "rules: unknown rule code");
    require(r != 3 || (a.fixed_arms[b] >= 0 && a.fixed_arms[b] < K), "fixed_arms: arm out of range [0, K)");
    require(r != 2 || (a.eta && std::isfinite(a.eta[b]) && a.eta[b] >= 0), "eta: must be finite and >= 0");
  }
  parallel_chunks(B, 1, [&](int64_t, int64_t b, int64_t) {
    std::vector<double> buffer((3 + 3 * V) * K + M, 0.0);
    double* p = buffer.data();
    const bandits::LearnerState st{p, p + K, p + 2 * K, p + (2 + V) * K, p + (2 + 2 * V) * K, p + (2 + 3 * V) * K,
                                   1, K, V};
    for (int64_t i = 0; i < K; ++i) a.pulls[b * K + i] = 0;
    for (int64_t i = 0; i < a.n_buckets; ++i) {
      a.reward_trace[b * a.n_buckets + i] = 0;
      a.violation_trace[b * a.n_buckets + i] = 0;
      for (int64_t j = 0; j < M; ++j) a.residual_trace[(b * a.n_buckets + i) * M + j] = 0;
    }
    bandits::run_learner(env, a, b, st, p + (3 + 3 * V) * K, 1);
  });
}

}  // namespace fk
