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
#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"

namespace fk {

enum class Likelihood : int { kNone = 0, kSequence = 1, kTokenMean = 2, kTokenSum = 3 };
enum class Scale : int { kGroup = 0, kBatch = 1, kNone = 2 };

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
};

// Raw, typed-erased pointers as handed over by the bindings.  Optional inputs are nullptr.
struct AdvantageArrays {
  const void* rewards = nullptr;     // [N], dtype == out dtype
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
