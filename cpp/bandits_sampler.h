// The sampler floor of the fused episode: the environment's draws alone, no learner.
//
// A fused OFS episode (bandit_episode_cpu) spends most of each learner-round in the five exact
// Binomial draws of the environment (Philox4x32-10 + BTRS / inversion, bandits_core.h).  This
// loop runs the same env_round (same draws, same share dynamics) for learners that visit the
// arms a given number of times each (an episode's pull counts: the same draw parameters as the
// episode, in arm order), without the bounds, the selection or the traces, so that the
// episode's learner-rounds per second can be stated as a fraction of what the sampler alone
// does.  Benchmarks only (bench/bench_bandits.py).
#pragma once

#include <cstdint>

#include "bandits.h"

namespace fk {

// For each learner b (stream b): pulls[b * K + k] rounds on arm k, arms in increasing order,
// round t drawing from the Philox stream (seed, b, t) as in the episode.  Returns the sum of
// all rewards (keeps the draws observable).  parallel: learners over the OpenMP threads in the
// episode's partition; else on the calling thread only.
double sampler_rounds_cpu(const EnvTable& env, const int64_t* pulls, int64_t n_learners, uint64_t seed,
                          bool parallel);

}  // namespace fk
