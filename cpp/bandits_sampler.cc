// The environment's draws alone (bandits_sampler.h).
#include "bandits_sampler.h"

#include <vector>

#include "bandits_core.h"

namespace fk {
namespace {

double learner_rounds(const EnvTable& env, const int64_t* pulls, int64_t b, uint64_t seed) {
  double share = env.p0, reward = 0.0;
  int64_t t = 0;
  for (int64_t k = 0; k < env.n_arms; ++k) {
    for (int64_t i = 0; i < pulls[k]; ++i, ++t) {
      bandits::RoundStream rng(seed, static_cast<uint64_t>(b), static_cast<uint64_t>(t));
      const bandits::RoundOutcome o = bandits::env_round(env, k, share, rng);
      share = o.next_share;
      reward += o.reward;
    }
  }
  return reward;
}

}  // namespace

double sampler_rounds_cpu(const EnvTable& env, const int64_t* pulls, int64_t n_learners, uint64_t seed,
                          bool parallel) {
  check_env_table(env);
  require(n_learners >= 0, "sampler: n_learners must be >= 0");
  for (int64_t i = 0; i < n_learners * env.n_arms; ++i) require(pulls[i] >= 0, "pulls: must be >= 0");
  const int64_t K = env.n_arms;
  std::vector<double> reward(n_learners, 0.0);
  if (parallel) {
    parallel_chunks(n_learners, 1, [&](int64_t, int64_t b, int64_t) {
      reward[b] = learner_rounds(env, pulls + b * K, b, seed);
    });
  } else {
    for (int64_t b = 0; b < n_learners; ++b) reward[b] = learner_rounds(env, pulls + b * K, b, seed);
  }
  double total = 0.0;
  for (double r : reward) total += r;  // learner order: deterministic
  return total;
}

}  // namespace fk
