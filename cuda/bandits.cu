// CUDA implementation of the bandits contract (../cpp/bandits.h).  The per-learner arithmetic
// is ../cpp/bandits_core.h, shared with the CPU kernels; here only the launches differ:
//   update:  validate (first bad learner by atomicMin, deterministic) -> apply only when valid;
//            errors come back through status[2] = (code, learner), never by exception;
//   select:  one thread per learner;
//   episode: one thread per learner running all T rounds, its state in stream-ordered scratch
//            laid out [item][learner] (stride B) so that a warp's loads coalesce.
// Everything runs on the caller's stream; nothing synchronises the device.
#include <cstdint>

#include "bandits_core.h"
#include "common.cuh"

namespace fk {
namespace {

constexpr int kThreads = 128;
constexpr unsigned long long kNoLearner = 0x7fffffffffffffffull;

__global__ void init_status(int64_t* status) {
  status[0] = 0;
  status[1] = static_cast<int64_t>(kNoLearner);
}

__device__ int observation_code(const BanditState& s, const UpdateArgs& a, int64_t b) {
  const int64_t M = s.n_constraints;
  const double w = a.weights ? a.weights[b] : a.weight;
  return bandits::check_observation(a.arms[b], s.n_arms, a.rewards[b], M ? a.residuals + b * M : nullptr, M, w,
                                    s.total[b]);
}

__global__ void validate_update(BanditState s, UpdateArgs a) {
  for (int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; b < s.n_learners;
       b += int64_t{blockDim.x} * gridDim.x) {
    if (observation_code(s, a, b) != 0) {
      atomicMin(reinterpret_cast<unsigned long long*>(a.status + 1), static_cast<unsigned long long>(b));
    }
  }
}

__global__ void apply_update(BanditState s, UpdateArgs a) {
  const int64_t K = s.n_arms, M = s.n_constraints, V = 1 + M;
  const int64_t bad = a.status[1];
  for (int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; b < s.n_learners;
       b += int64_t{blockDim.x} * gridDim.x) {
    if (bad != static_cast<int64_t>(kNoLearner)) {
      if (b == bad) a.status[0] = observation_code(s, a, b);
      continue;
    }
    const bandits::LearnerState st{s.count + b * K, s.rounds + b * K, s.sum + b * V * K, s.sumsq + b * V * K,
                                   s.mean + b * V * K, s.inv_sqrt + b * K, 1, K, V};
    const double* h = M ? a.residuals + b * M : nullptr;
    const double w = a.weights ? a.weights[b] : a.weight;
    bandits::observe(st, s.total + b, a.arms[b], a.rewards[b], h, 1, w);
    if (a.lambdas) bandits::update_lambdas(a.lambdas + b * M, 1, h, 1, M, a.eta[b]);
  }
}

__global__ void select_kernel(BanditState s, SelectArgs a) {
  const int64_t K = s.n_arms, M = s.n_constraints, V = 1 + M;
  for (int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; b < s.n_learners;
       b += int64_t{blockDim.x} * gridDim.x) {
    const bandits::LearnerView view{s.count + b * K, s.rounds + b * K, s.sum + b * V * K, s.sumsq + b * V * K,
                                    s.mean + b * V * K, s.inv_sqrt + b * K, 1, K, M};
    a.arms[b] = bandits::choose_arm(view, a.bound, a.rule, s.total[b], a.lambdas ? a.lambdas + b * M : nullptr, 1,
                                    a.ucb ? a.ucb + b * K : nullptr, a.lcb ? a.lcb + b * M * K : nullptr, 1);
  }
}

__global__ void episode_kernel(EnvTable env, EpisodeArgs a, double* scratch) {
  const int64_t B = a.n_learners, K = env.n_arms, M = env.service ? 2 : 1, V = 1 + M;
  for (int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; b < B; b += int64_t{blockDim.x} * gridDim.x) {
    double* p = scratch + b;
    const bandits::LearnerState st{p, p + K * B, p + 2 * K * B, p + (2 + V) * K * B, p + (2 + 2 * V) * K * B,
                                   p + (2 + 3 * V) * K * B, B, K, V};
    bandits::run_learner(env, a, b, st, p + (3 + 3 * V) * K * B, B);
  }
}

void check_update(const BanditState& s, const UpdateArgs& a) {
  require(s.n_learners >= 0 && s.n_arms >= 1 && s.n_constraints >= 0, "bandit state: bad sizes");
  require(s.n_learners == 0 || (a.arms && a.rewards && (s.n_constraints == 0 || a.residuals)),
          "update: missing array");
  require(a.status != nullptr, "update on CUDA needs a status array");
  require(a.lambdas == nullptr || a.eta != nullptr, "update: lambdas need eta");
}

}  // namespace

void bandit_update_cuda(const BanditState& s, const UpdateArgs& a, int device, uintptr_t stream_handle) {
  check_update(s, a);
  cuda::DeviceGuard guard(device);
  const cudaStream_t stream = cuda::as_stream(stream_handle);
  init_status<<<1, 1, 0, stream>>>(a.status);
  if (s.n_learners > 0) {
    const int blocks = cuda::blocks_for(s.n_learners, kThreads);
    validate_update<<<blocks, kThreads, 0, stream>>>(s, a);
    apply_update<<<blocks, kThreads, 0, stream>>>(s, a);
  }
  cuda::check(cudaGetLastError(), "bandit_update");
}

void bandit_select_cuda(const BanditState& s, const SelectArgs& a, int device, uintptr_t stream_handle) {
  check_bound_options(a.bound);
  require(s.n_learners >= 0 && s.n_arms >= 1 && s.n_constraints >= 0, "bandit state: bad sizes");
  require(a.rule == SelectRule::kOfs || a.rule == SelectRule::kUcb || a.rule == SelectRule::kPrimalDual,
          "rule must be ofs, ucb or primal_dual");
  require(a.rule != SelectRule::kPrimalDual || s.n_constraints == 0 || a.lambdas, "primal_dual needs lambdas");
  if (s.n_learners == 0) return;
  cuda::DeviceGuard guard(device);
  const cudaStream_t stream = cuda::as_stream(stream_handle);
  select_kernel<<<cuda::blocks_for(s.n_learners, kThreads), kThreads, 0, stream>>>(s, a);
  cuda::check(cudaGetLastError(), "bandit_select");
}

// The table, rules, arms and step sizes were validated, and the arm columns of per-group
// thresholds built, by the Python layer on the host before being copied to the device (device
// memory cannot be read here without synchronising).  Per-group thresholds need no code here: env_round (bandits_core.h) reads
// the arm's column of each group, as on the CPU.
void bandit_episode_cuda(const EnvTable& env, const EpisodeArgs& a, int device, uintptr_t stream_handle) {
  check_bound_options(a.bound);
  require(env.n_arms >= 1 && env.accept && env.precision, "environment table: missing arrays");
  require(env.n_columns >= 0 && (env.columns != nullptr || env.n_columns == 0 || env.n_columns == env.n_arms),
          "environment table: shared thresholds need one column per arm");
  require(a.n_learners >= 0 && a.n_rounds >= 1 && a.n_buckets >= 1 && a.n_buckets <= a.n_rounds,
          "episode: need n_rounds >= 1 and 1 <= n_buckets <= n_rounds");
  const int64_t B = a.n_learners, K = env.n_arms, M = env.service ? 2 : 1, V = 1 + M;
  if (B == 0) return;
  cuda::DeviceGuard guard(device);
  const cudaStream_t stream = cuda::as_stream(stream_handle);
  const size_t items = static_cast<size_t>((3 + 3 * V) * K + M) * static_cast<size_t>(B);
  cuda::StreamBuffer scratch(items * sizeof(double), stream);
  cuda::check(cudaMemsetAsync(scratch.as<double>(), 0, items * sizeof(double), stream), "cudaMemsetAsync");
  const size_t nb = static_cast<size_t>(B * a.n_buckets);
  cuda::check(cudaMemsetAsync(a.reward_trace, 0, nb * sizeof(double), stream), "cudaMemsetAsync");
  cuda::check(cudaMemsetAsync(a.violation_trace, 0, nb * sizeof(double), stream), "cudaMemsetAsync");
  cuda::check(cudaMemsetAsync(a.residual_trace, 0, nb * M * sizeof(double), stream), "cudaMemsetAsync");
  cuda::check(cudaMemsetAsync(a.pulls, 0, static_cast<size_t>(B * K) * sizeof(double), stream), "cudaMemsetAsync");
  episode_kernel<<<cuda::blocks_for(B, kThreads), kThreads, 0, stream>>>(env, a, scratch.as<double>());
  cuda::check(cudaGetLastError(), "bandit_episode");
}

}  // namespace fk
