// Group-relative advantages with rank reweighting (GRPO and the "unlikeliness" reward).
//
// One contract, two compiled implementations: advantage.cc (CPU) and
// ../cuda/advantage.cu (CUDA).  The numpy reference lives in tests/advantage_reference.py.
//
// Per group (fixed size, or rows sharing a group id), over the rows whose reward is not NaN:
//   rank_i    0 = least likely ... m-1 = most likely (likelihood = masked mean or sum of the
//             token log-probs, or the per-sequence value); ties "average" or "first";
//   r'_i      = r_i * (1 - beta_rank * rank_i / m)                  (m = rows with a reward);
//   base_i    = mean(r')  or  leave-one-out mean;
//   A_i       = (r'_i - base_i) / (std + eps)   with std of the group, of the whole batch,
//               or no division at all (scale "none");
//   out[i]    = A_i, or out[i, t] = A_i * mask[i, t] for the token-level result.
// Rows with a NaN reward get 0.  Groups with one rewarded row follow the singleton policy.
// A NaN likelihood among a group's rewarded rows makes that group's advantages NaN, so that a
// broken upstream log-prob is visible instead of silently mis-ranked.  So does a +-inf reward,
// or group statistics beyond float64 (a non-finite sum of r', or, unless scale "none", of its
// squared deviations); a poisoned group stays out of the batch std.  A batch std beyond float64
// makes every rewarded row NaN.  A constant group (every r' equal, m >= 2) has mean r' and m2 0
// exactly and advantages exactly 0; a divisor of 0 (std 0 with eps 0) gives 0, not 0/0.
//
// Pass@k (pass_k = k > 0): with the m rewarded rows sorted, r(1) <= ... <= r(m), and k' = min(k, m),
//   a_j       = C(j-1, k'-1) / C(m-1, k'-1)      (ratio recurrence from a_m = 1, float64),
//   mu        = (k'/m) sum_j a_j r(j),   sigma^2 = (k'/m) sum_j a_j (r(j) - mu)^2
//               (mean / population variance of the maximum of a uniformly drawn k'-subset),
//   E(i)      = a_i r(i) + sum_{j>i} a_j (k'-1)/(j-1) r(j)   (mean maximum of the subsets holding i),
//   A_i       = (E_i - mu) / (sigma + eps); scale "batch" pools the groups' (m, mu, m sigma^2).
// Equal rewards share one E (the value at the top of their run), so the result does not depend
// on the order of rows.  k = 1 is GRPO with the population std; the baseline is always mu.
//
// Several rewards per row (n_rewards = R > 0, rewards [N, R] contiguous, reward_weights [R]),
// as TRL 1.16.0's multi_objective_aggregation:
//   sum_then_normalize  s_i = nansum_k w_k r_ik (NaN when all R are NaN), then the above on s;
//   normalize_then_sum  z_ik = (r_ik - mean_gk) / (std_gk + eps) per group and reward (NaN
//                       left out; a reward with fewer than two values in the group adds 0),
//                       s_i = nansum_k w_k z_ik (NaN when all R are NaN), then
//                       A_i = (s_i - mean(s)) / (std(s) + eps) over the whole batch.
#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"

namespace fk {

enum class Likelihood : int { kNone = 0, kSequence = 1, kTokenMean = 2, kTokenSum = 3 };
enum class Scale : int { kGroup = 0, kBatch = 1, kNone = 2 };
enum class MultiReward : int { kSumThenNormalize = 0, kNormalizeThenSum = 1 };

struct AdvantageOptions {
  int64_t n_rows = 0;
  int64_t group_size = 0;        // > 0: rows g*G .. g*G+G-1 form group g; 0: use group_ids
  Likelihood likelihood = Likelihood::kNone;
  double beta_rank = 0.0;
  bool ties_average = true;      // false: "first" (lower row index, lower rank)
  bool baseline_loo = false;     // false: group mean
  Scale scale = Scale::kGroup;
  bool unbiased = true;
  double eps = 1e-6;
  bool singleton_raw = false;    // false: "zero"
  int64_t pass_k = 0;            // > 0: pass@k advantages (see above)
  // Signal flag of a group with >= 2 rewarded rows: its reward std (ddof from `unbiased`, over
  // the rewards before rank reweighting) > signal_tol; signal_tol = 0: rewards not all equal.
  double signal_tol = 0.0;
  // NaN rewards: true = missing (left out of the group, advantage 0); false = they propagate
  // (as verl and OpenRLHF): every row of a group holding one gets NaN.
  bool nan_missing = true;
  int64_t n_rewards = 0;         // 0: rewards [N]; R > 0: rewards [N, R] with reward_weights [R]
  MultiReward multi_reward = MultiReward::kSumThenNormalize;
  // Token level (n_tokens > 0): token_logp and/or mask are [n_rows, n_tokens] with the given
  // row strides (elements) and a contiguous last dimension; out has out_row_stride.
  int64_t n_tokens = 0;
  int64_t logp_row_stride = 0;
  int64_t mask_row_stride = 0;
  int64_t out_row_stride = 0;
  // Non-temporal stores for the [N, T] result: faster into a caller's (already mapped) buffer,
  // slower into fresh memory, whose first touch faults the page in and zeroes it in cache.
  bool streaming_stores = true;

  bool uses_ranks() const { return likelihood != Likelihood::kNone && beta_rank != 0.0; }
  bool normalize_then_sum() const { return n_rewards > 0 && multi_reward == MultiReward::kNormalizeThenSum; }
};

// Raw, typed-erased pointers as handed over by the bindings.  Optional inputs are nullptr.
struct AdvantageArrays {
  const void* rewards = nullptr;     // [N] (or [N, R]), dtype == out dtype
  const void* reward_weights = nullptr;  // [R] when n_rewards > 0, dtype == out dtype
  const int64_t* group_ids = nullptr;  // [N] when group_size == 0
  const void* seq_logp = nullptr;    // [N], dtype == out dtype
  const void* token_logp = nullptr;  // [N, T]
  const void* mask = nullptr;        // [N, T]; bool/uint8 or the out dtype
  void* out = nullptr;               // [N] or [N, T]
  bool* row_has_signal = nullptr;    // [N], optional
  DType out_dtype = DType::kFloat32;
  DType logp_dtype = DType::kFloat32;
  DType mask_dtype = DType::kUInt8;
};

// Validates the options that do not depend on array contents; throws std::invalid_argument.
// Inline so that the CPU and the CUDA module share it without sharing an object file.
inline void check_advantage_options(const AdvantageOptions& opt, const AdvantageArrays& a) {
  require(opt.n_rows >= 0, "rewards: negative length");
  require(opt.group_size > 0 || a.group_ids != nullptr || opt.n_rows == 0,
          "exactly one of group_size and group_ids must be given");
  require(opt.group_size <= 0 || opt.n_rows % opt.group_size == 0, "group_size must divide the number of rows");
  require(std::isfinite(opt.beta_rank), "beta_rank must be finite");
  require(std::isfinite(opt.eps) && opt.eps >= 0.0, "eps must be finite and >= 0");
  require(opt.pass_k >= 0, "pass_k must be >= 1");
  require(opt.pass_k == 0 || !opt.baseline_loo, "pass_k takes no leave-one-out baseline");
  require(std::isfinite(opt.signal_tol) && opt.signal_tol >= 0.0, "signal_tol must be finite and >= 0");
  require(opt.n_rewards >= 0, "rewards: negative number of reward columns");
  require(opt.n_rewards == 0 || a.reward_weights != nullptr, "reward_weights is missing");
  require(!opt.normalize_then_sum() || (!opt.uses_ranks() && opt.pass_k == 0 && !opt.baseline_loo &&
                                         opt.scale == Scale::kGroup),
          "multi_reward normalize_then_sum takes no beta_rank, pass_k, baseline or scale");
  require(opt.likelihood != Likelihood::kSequence || a.seq_logp != nullptr, "seq_logp is missing");
  const bool token_likelihood = opt.likelihood == Likelihood::kTokenMean || opt.likelihood == Likelihood::kTokenSum;
  require(!token_likelihood || (a.token_logp != nullptr && a.mask != nullptr), "token_logp needs a mask");
  require(a.mask == nullptr || opt.n_tokens >= 0, "mask: negative number of tokens");
  const bool byte_mask = a.mask_dtype == DType::kBool || a.mask_dtype == DType::kUInt8;
  require(a.mask == nullptr || byte_mask || a.mask_dtype == a.out_dtype,
          "mask must be bool/uint8 or have the dtype of rewards");
}

// CPU implementation (advantage.cc).  Multithreaded with OpenMP where built with it;
// deterministic regardless of the thread count.
void group_advantages_cpu(const AdvantageArrays& arrays, const AdvantageOptions& opt);

}  // namespace fk
