// CUDA implementation of the group-relative advantage contract (../cpp/advantage.h).
//
// Pipeline on the caller's stream, no host synchronisation:
//   1. ragged ids only: stable radix sort of (id, row) and segment heads -> group starts;
//   2. token likelihoods only: one warp per row, masked mean/sum of the log-probs;
//   0. several rewards per row only: the combined reward s of each row (sum_then_normalize: one
//      thread per row; normalize_then_sum: one warp per group, then steps 4 and 5 directly);
//   3. one warp per group: ranks (counting, O(m^2 / 32) per group), reweighting, mean, std,
//      advantages (or centred values awaiting the batch std) per row, signal flags; pass@k:
//      sorted positions by counting, then lane 0 walks the sorted group once in the CPU's
//      order and arithmetic (no fused multiply-adds), so the pass@k statistics are the CPU's;
//   4. scale "batch" only: one block combines the per-group moments in a fixed tree order;
//   5. output: the [N] advantages, or the masked broadcast to [N, T].
// Reductions use fixed lane/tree orders (no atomics), so results are deterministic; they can
// differ from the CPU's in the last bits because the summation order differs.
#include <cub/cub.cuh>

#include <cmath>
#include <memory>

#include "advantage.cuh"
#include "common.cuh"

namespace fk {
namespace {

using cuda::Accumulator;
using cuda::check;
using cuda::from_value;
using cuda::StreamBuffer;
using cuda::to_float;

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}
__device__ __forceinline__ double warp_max(double v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = fmax(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}
__device__ __forceinline__ double warp_min(double v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = fmin(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

__device__ __forceinline__ bool is_nan_value(double x) { return x != x; }

template <typename T>
__device__ __forceinline__ double as_double(T x) {
  return static_cast<double>(to_float(x));
}
template <>
__device__ __forceinline__ double as_double<double>(double x) {
  return x;
}

template <typename MaskT, typename Acc>
__device__ __forceinline__ Acc mask_weight(MaskT m) {
  return static_cast<Acc>(to_float(m));
}
template <>
__device__ __forceinline__ double mask_weight<double, double>(double m) {
  return m;
}
template <>
__device__ __forceinline__ float mask_weight<uint8_t, float>(uint8_t m) {
  return m ? 1.0f : 0.0f;
}
template <>
__device__ __forceinline__ double mask_weight<uint8_t, double>(uint8_t m) {
  return m ? 1.0 : 0.0;
}

// Where the rows of group g are: implicit fixed-size groups or the sorted CSR.
struct DeviceGroups {
  int64_t fixed_size;          // > 0: fixed groups
  int64_t fixed_count;
  const int64_t* start;        // ragged: [n_groups + 1]
  const int64_t* rows;         // ragged: rows sorted by id, stable
  const int64_t* count;        // ragged: n_groups, on the device

  __device__ int64_t n_groups() const { return fixed_size ? fixed_count : *count; }
  __device__ int64_t size(int64_t g) const { return fixed_size ? fixed_size : start[g + 1] - start[g]; }
  __device__ int64_t row(int64_t g, int64_t j) const { return fixed_size ? g * fixed_size + j : rows[start[g] + j]; }
  // First slot of group g in [N] scratch laid out group after group.
  __device__ int64_t base(int64_t g) const { return fixed_size ? g * fixed_size : start[g]; }
};

// ---- 1. grouping of ragged ids -------------------------------------------------------------

__global__ void iota_kernel(int64_t* rows, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) rows[i] = i;
}

__global__ void head_flags_kernel(const int64_t* sorted_ids, int64_t* flags, int64_t n) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    flags[k] = (k == 0 || sorted_ids[k] != sorted_ids[k - 1]) ? 1 : 0;
  }
}

// segment[k] = 1-based group index of sorted position k (inclusive scan of the head flags).
__global__ void group_starts_kernel(const int64_t* flags, const int64_t* segment, int64_t* start, int64_t* count, int64_t n) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    if (flags[k]) start[segment[k] - 1] = k;
    if (k == n - 1) {
      start[segment[k]] = n;
      *count = segment[k];
    }
  }
}

// ---- 0. several rewards per row ------------------------------------------------------------

// nansum_k w_k (r_k - shift_k) scale_k in the CPU's order (shift/scale nullptr: 0 / 1; a
// scale of 0 leaves the reward out); NaN when every reward of the row is NaN.
template <typename Real>
__device__ double weighted_nansum(const Real* r, const Real* w, int64_t n_rewards, const double* shift,
                                  const double* scale) {
  double sum = 0.0;
  bool scorable = false;
  for (int64_t k = 0; k < n_rewards; ++k) {
    const double v = as_double(r[k]);
    scorable |= !is_nan_value(v);
    double term = as_double(w[k]) * (shift != nullptr ? (v - shift[k]) * scale[k] : v);
    if (scale != nullptr && scale[k] == 0.0) term = NAN;
    if (!is_nan_value(term)) sum += term;
  }
  return scorable ? sum : NAN;
}

template <typename Real>
__global__ void sum_rewards_kernel(const Real* rewards, const Real* weights, double* combined, int64_t n_rows,
                                   int64_t n_rewards) {
  for (int64_t row = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; row < n_rows; row += int64_t(gridDim.x) * blockDim.x) {
    combined[row] = weighted_nansum(rewards + row * n_rewards, weights, n_rewards, nullptr, nullptr);
  }
}

// normalize_then_sum, one warp per group: per reward, mean and std over the group's non-NaN
// values (a reward with too few values for a std adds nothing), then s per row, the group's
// moments of s (for the batch statistics) and its signal flag.  shift/scale: [n_groups * R].
template <typename Real>
__global__ void normalize_rewards_kernel(const Real* rewards, const Real* weights, DeviceGroups groups, int64_t n_rewards,
                                         bool unbiased, double eps, double signal_tol, double* shift, double* scale,
                                         double* combined, double* moments, bool* row_has_signal) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / kWarp;
  const int64_t n_groups = groups.n_groups();
  for (int64_t g = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / kWarp; g < n_groups; g += warps) {
    const int64_t size = groups.size(g);
    double* mean = shift + g * n_rewards;
    double* inverse = scale + g * n_rewards;
    for (int64_t k = 0; k < n_rewards; ++k) {
      double count = 0, sum = 0;
      for (int64_t j = lane; j < size; j += kWarp) {
        const double v = as_double(rewards[groups.row(g, j) * n_rewards + k]);
        if (!is_nan_value(v)) count += 1, sum += v;
      }
      count = warp_sum(count);
      sum = warp_sum(sum);
      const double mu = count > 0 ? sum / count : 0.0;
      double m2 = 0;
      for (int64_t j = lane; j < size; j += kWarp) {
        const double d = as_double(rewards[groups.row(g, j) * n_rewards + k]) - mu;
        if (!is_nan_value(d)) m2 += d * d;
      }
      m2 = warp_sum(m2);
      const double dof = unbiased ? count - 1 : count;
      if (lane == 0) {
        mean[k] = mu;
        inverse[k] = count > 0 && dof > 0 ? 1.0 / (sqrt(m2 / dof) + eps) : 0.0;
      }
    }
    __syncwarp();
    double count = 0, sum = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t j = lane; j < size; j += kWarp) {
      const int64_t row = groups.row(g, j);
      const double s = weighted_nansum(rewards + row * n_rewards, weights, n_rewards, mean, inverse);
      combined[row] = s;
      if (!is_nan_value(s)) count += 1, sum += s, lo = fmin(lo, s), hi = fmax(hi, s);
    }
    count = warp_sum(count);
    sum = warp_sum(sum);
    lo = warp_min(lo);
    hi = warp_max(hi);
    const double mu = count > 0 ? sum / count : 0.0;
    double m2 = 0;
    for (int64_t j = lane; j < size; j += kWarp) {
      const double d = combined[groups.row(g, j)] - mu;
      if (!is_nan_value(d)) m2 += d * d;
    }
    m2 = warp_sum(m2);
    if (lane == 0) {
      moments[3 * g] = count;
      moments[3 * g + 1] = mu;
      moments[3 * g + 2] = m2;
    }
    if (row_has_signal != nullptr) {
      const double dof = unbiased ? count - 1 : count;
      const bool signal = count >= 2 && (signal_tol == 0.0 ? lo != hi : (dof > 0 ? sqrt(m2 / dof) : 0.0) > signal_tol);
      for (int64_t j = lane; j < size; j += kWarp) row_has_signal[groups.row(g, j)] = signal;
    }
  }
}

// A = (s - mean(s)) / (std(s) + eps) over the batch; unscorable rows get 0.  stats: divisor, mean.
__global__ void normalize_batch_kernel(const double* combined, const double* stats, double* advantage, int64_t n_rows) {
  for (int64_t row = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; row < n_rows; row += int64_t(gridDim.x) * blockDim.x) {
    const double s = combined[row];
    advantage[row] = is_nan_value(s) ? 0.0 : (s - stats[1]) / stats[0];
  }
}

// ---- 2. token likelihoods --------------------------------------------------------------------

template <typename LogpT, typename MaskT>
__global__ void row_likelihood_kernel(const LogpT* logp, const MaskT* mask, double* likelihood, int64_t n_rows,
                                      int64_t n_tokens, int64_t logp_stride, int64_t mask_stride, bool mean) {
  using Acc = typename Accumulator<LogpT>::type;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / kWarp;
  for (int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / kWarp; row < n_rows; row += warps) {
    const LogpT* lp = logp + row * logp_stride;
    const MaskT* mk = mask + row * mask_stride;
    Acc sum = 0, weight = 0;
    for (int64_t t = lane; t < n_tokens; t += kWarp) {
      const Acc w = mask_weight<MaskT, Acc>(mk[t]);
      sum += w != Acc(0) ? w * static_cast<Acc>(as_double(lp[t])) : Acc(0);
      weight += w;
    }
    sum = warp_sum(sum);
    weight = warp_sum(weight);
    if (lane == 0) {
      likelihood[row] = !mean ? double(sum) : (weight != Acc(0) ? double(sum) / double(weight) : 0.0);
    }
  }
}

// ---- 3. one warp per group -------------------------------------------------------------------

struct GroupParams {
  DeviceGroups groups;
  const double* combined;    // several rewards per row: s per row, or nullptr (read the rewards)
  const double* likelihood;  // token likelihoods, or nullptr
  bool ranks;
  double beta_rank;
  bool ties_average;
  bool baseline_loo;
  int scale;                 // Scale
  bool unbiased;
  double eps;
  bool singleton_raw;
  double* reweighted;        // [N] scratch: r'
  double* advantage;         // [N]: final A, or the centred value when scale == batch
  bool* row_has_signal;      // optional
  double* moments;           // scale == batch: [3 * n_groups] count, mean, m2
  int64_t pass_k;            // > 0: pass@k
  double signal_tol;
  bool nan_missing;
  double* position;          // pass@k: [N] sorted position of each row within its group
  double* sorted;            // pass@k: [N] the group's rewards sorted, group after group
  double* expected;          // pass@k: [N] E by sorted position
};

template <typename Real>
__device__ __forceinline__ double reward_of(const GroupParams& p, const Real* rewards, int64_t row) {
  return p.combined != nullptr ? p.combined[row] : as_double(rewards[row]);
}

template <typename Real>
__device__ double likelihood_of(const GroupParams& p, const Real* seq_logp, int64_t row) {
  return p.likelihood != nullptr ? p.likelihood[row] : as_double(seq_logp[row]);
}

__device__ __forceinline__ bool is_nan(double x) { return x != x; }

// std of the m rewarded rows of a group (whole warp), as std_from of the CPU.
__device__ double warp_group_std(double sum_lane, double m2_lane, int64_t m, bool unbiased);

// Pass@k statistics of one group (advantage.h), by lane 0 in the order and arithmetic of the
// CPU's center_pass_at_k (cpp/advantage.cc): explicit _rn operations, so no multiply-add is
// fused and the doubles are the CPU's.  Writes E by sorted position; returns mu, variance.
__device__ void pass_at_k_lane0(double* sorted, double* expected, int64_t m, int64_t pass_k, double* mu_out,
                                double* variance_out) {
  const int64_t k = pass_k < m ? pass_k : m;
  const double best = sorted[m - 1];
  for (int64_t q = 0; q < m; ++q) sorted[q] = __dsub_rn(sorted[q], best);
  double tail = 0.0, first = 0.0, a = 1.0;
  for (int64_t j = m; j >= 1; --j) {
    const double top = a;
    const double tail_coefficient =
        j >= 2 ? __dmul_rn(a, __ddiv_rn(static_cast<double>(k - 1), static_cast<double>(j - 1))) : 0.0;
    const double v = sorted[j - 1];
    expected[j - 1] = __dadd_rn(__dmul_rn(top, v), tail);
    tail = __dadd_rn(tail, __dmul_rn(tail_coefficient, v));
    first = __dadd_rn(first, __dmul_rn(top, v));
    if (j >= 2 && a != 0.0) {
      const int64_t above = j - k > 0 ? j - k : 0;
      a = __dmul_rn(a, __ddiv_rn(static_cast<double>(above), static_cast<double>(j - 1)));
    }
  }
  for (int64_t q = m - 2; q >= 0; --q) {
    if (sorted[q] == sorted[q + 1]) expected[q] = expected[q + 1];
  }
  const double share = __ddiv_rn(static_cast<double>(k), static_cast<double>(m));
  const double mu = __dmul_rn(first, share);
  double spread = 0.0;
  a = 1.0;
  for (int64_t j = m; j >= 1; --j) {
    const double d = __dsub_rn(sorted[j - 1], mu);
    spread = __dadd_rn(spread, __dmul_rn(a, __dmul_rn(d, d)));
    if (j >= 2 && a != 0.0) {
      const int64_t above = j - k > 0 ? j - k : 0;
      a = __dmul_rn(a, __ddiv_rn(static_cast<double>(above), static_cast<double>(j - 1)));
    }
  }
  for (int64_t q = 0; q < m; ++q) expected[q] = __dsub_rn(expected[q], mu);  // E - mu, as the CPU's x
  *mu_out = __dadd_rn(mu, best);
  *variance_out = __dmul_rn(spread, share);
}

__device__ double warp_group_std(double, double m2_lane, int64_t m, bool unbiased) {
  const double m2 = warp_sum(m2_lane);
  const int64_t dof = unbiased ? m - 1 : m;
  return dof > 0 ? sqrt(m2 / double(dof)) : 0.0;
}

// Pass@k of one group with m >= 2 rewarded rows whose r' are in p.reweighted (whole warp).
template <typename Real>
__device__ void pass_at_k_group(const GroupParams& p, const Real* rewards, int64_t g, int64_t size, int64_t m,
                                bool poisoned) {
  const int lane = threadIdx.x % kWarp;
  const int64_t base = p.groups.base(g);
  // Stable sorted positions among the rewarded rows (ties in row order, as the CPU's ranks "first").
  for (int64_t j = lane; j < size; j += kWarp) {
    const int64_t row = p.groups.row(g, j);
    if (is_nan(reward_of(p, rewards, row))) continue;
    const double x = p.reweighted[row];
    int64_t before = 0;
    for (int64_t k = 0; k < size; ++k) {
      const int64_t other = p.groups.row(g, k);
      if (is_nan(reward_of(p, rewards, other))) continue;
      const double y = p.reweighted[other];
      before += y < x || (y == x && k < j);
    }
    p.position[row] = double(before);
    p.sorted[base + before] = x;
  }
  __syncwarp();
  double mu = 0, variance = 0;
  if (lane == 0) pass_at_k_lane0(p.sorted + base, p.expected + base, m, p.pass_k, &mu, &variance);
  mu = __shfl_sync(kFullMask, mu, 0);
  variance = __shfl_sync(kFullMask, variance, 0);
  __syncwarp();
  if (p.scale == int(Scale::kBatch) && lane == 0 && !poisoned) {
    p.moments[3 * g] = double(m);
    p.moments[3 * g + 1] = mu;
    p.moments[3 * g + 2] = variance * double(m);
  }
  const double sigma = sqrt(fmax(variance, 0.0));
  for (int64_t j = lane; j < size; j += kWarp) {
    const int64_t row = p.groups.row(g, j);
    if (is_nan(reward_of(p, rewards, row))) continue;
    const double centered = poisoned ? NAN : p.expected[base + static_cast<int64_t>(p.position[row])];
    p.advantage[row] = p.scale == int(Scale::kGroup) ? centered / (sigma + p.eps) : centered;
  }
}

template <typename Real>
__global__ void group_kernel(const Real* rewards, const Real* seq_logp, GroupParams p) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / kWarp;
  const int64_t n_groups = p.groups.n_groups();
  for (int64_t g = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / kWarp; g < n_groups; g += warps) {
    const int64_t size = p.groups.size(g);
    // Pass 1: rewarded rows, their range and sum (signal), NaN likelihoods (poison).
    double count = 0, lo = INFINITY, hi = -INFINITY, nan_likelihood = 0, raw_sum = 0;
    for (int64_t j = lane; j < size; j += kWarp) {
      const int64_t row = p.groups.row(g, j);
      const double r = reward_of(p, rewards, row);
      if (is_nan(r)) {
        p.advantage[row] = 0.0;
        continue;
      }
      count += 1;
      lo = fmin(lo, r);
      hi = fmax(hi, r);
      raw_sum += r;
      if (p.ranks && is_nan(likelihood_of(p, seq_logp, row))) nan_likelihood = 1;
    }
    count = warp_sum(count);
    lo = warp_min(lo);
    hi = warp_max(hi);
    raw_sum = warp_sum(raw_sum);
    const bool poisoned = warp_sum(nan_likelihood) > 0;
    const int64_t m = static_cast<int64_t>(count);
    const bool propagate_nan = !p.nan_missing && m < size;
    bool signal = !propagate_nan && m >= 2 && lo != hi;
    if (signal && p.signal_tol > 0.0) {
      const double raw_mean = raw_sum / double(m);
      double raw_m2 = 0;
      for (int64_t j = lane; j < size; j += kWarp) {
        const double d = reward_of(p, rewards, p.groups.row(g, j)) - raw_mean;
        if (!is_nan(d)) raw_m2 += d * d;
      }
      signal = warp_group_std(0.0, raw_m2, m, p.unbiased) > p.signal_tol;
    }
    if (p.row_has_signal != nullptr) {
      for (int64_t j = lane; j < size; j += kWarp) p.row_has_signal[p.groups.row(g, j)] = signal;
    }
    if (p.scale == int(Scale::kBatch) && lane == 0) {
      p.moments[3 * g] = 0.0;  // filled below for groups that enter the batch std
    }
    if (propagate_nan) {  // NaN propagates (verl, OpenRLHF): the whole group is NaN
      for (int64_t j = lane; j < size; j += kWarp) p.advantage[p.groups.row(g, j)] = NAN;
      continue;
    }
    if (m == 0) continue;

    // Pass 2: ranks among rewarded rows (row order breaks "first" ties), reweighting, sum, and
    // the range of the reweighted values (a constant group is centred to exactly 0).
    double sum = 0, lo_r = INFINITY, hi_r = -INFINITY;
    for (int64_t j = lane; j < size; j += kWarp) {
      const int64_t row = p.groups.row(g, j);
      double r = reward_of(p, rewards, row);
      if (is_nan(r)) continue;
      if (p.ranks && !poisoned) {
        const double lj = likelihood_of(p, seq_logp, row);
        int64_t less = 0, equal = 0, equal_before = 0;
        for (int64_t k = 0; k < size; ++k) {
          const int64_t other = p.groups.row(g, k);
          if (is_nan(reward_of(p, rewards, other))) continue;
          const double lk = likelihood_of(p, seq_logp, other);
          less += lk < lj;
          equal += lk == lj;
          equal_before += k < j && lk == lj;
        }
        const double rank = p.ties_average ? less + 0.5 * double(equal - 1) : double(less + equal_before);
        r *= 1.0 - p.beta_rank * rank / double(m);
      }
      p.reweighted[row] = r;
      sum += r;
      lo_r = fmin(lo_r, r);
      hi_r = fmax(hi_r, r);
    }
    sum = warp_sum(sum);
    if (p.pass_k > 0 && m >= 2) {
      __syncwarp();  // every r' of the group is written
      pass_at_k_group(p, rewards, g, size, m, poisoned);
      continue;
    }
    lo_r = warp_min(lo_r);
    hi_r = warp_max(hi_r);
    // As the CPU kernel: a constant group's mean is its value and its m2 is 0, exactly.
    const bool constant = m >= 2 && lo_r == hi_r;
    const double mean = constant ? lo_r : sum / double(m);
    double m2 = 0;
    for (int64_t j = lane; j < size && !constant; j += kWarp) {
      const int64_t row = p.groups.row(g, j);
      if (is_nan(reward_of(p, rewards, row))) continue;
      const double d = p.reweighted[row] - mean;
      m2 += d * d;
    }
    m2 = warp_sum(m2);
    // An infinite reward, or a sum / squared deviation beyond float64: poisoned (NaN).
    const bool dead = poisoned || !isfinite(sum) || (p.scale != int(Scale::kNone) && !isfinite(m2));
    if (p.scale == int(Scale::kBatch) && lane == 0 && !dead) {
      p.moments[3 * g] = double(m);
      p.moments[3 * g + 1] = mean;
      p.moments[3 * g + 2] = m2;
    }

    // Pass 3: advantages.  Singletons: "zero", or "raw" = baseline 0 and group std 1.
    const bool singleton = m == 1;
    const int64_t dof = p.unbiased ? m - 1 : m;
    const double group_std = singleton ? 1.0 : (dof > 0 ? sqrt(m2 / double(dof)) : 0.0);
    const double divisor = group_std + p.eps;
    for (int64_t j = lane; j < size; j += kWarp) {
      const int64_t row = p.groups.row(g, j);
      if (is_nan(reward_of(p, rewards, row))) continue;
      const double r = p.reweighted[row];
      double centered = singleton ? (p.singleton_raw ? r : 0.0)
                        : constant ? 0.0
                                   : (p.baseline_loo ? r - (sum - r) / double(m - 1) : r - mean);
      if (dead) centered = NAN;
      // Divisor 0 (std 0 with eps = 0): advantage 0, a NaN stays NaN (as the CPU's inverse 0).
      p.advantage[row] = p.scale != int(Scale::kGroup) ? centered
                         : divisor > 0 ? centered / divisor
                                       : centered * 0.0;
    }
  }
}

// ---- 4. batch std: per-group moments combined in a fixed tree order --------------------------

struct Moments {
  double count, mean, m2;
};

__device__ Moments combine(Moments a, Moments b) {
  if (b.count == 0) return a;
  if (a.count == 0) return b;
  const double n = a.count + b.count;
  const double delta = b.mean - a.mean;
  return {n, a.mean + delta * b.count / n, a.m2 + b.m2 + delta * delta * a.count * b.count / n};
}

constexpr int kReduceThreads = 1024;

__global__ void batch_divisor_kernel(const double* moments, DeviceGroups groups, bool unbiased, double eps, double* divisor) {
  __shared__ Moments partial[kReduceThreads];
  Moments acc{0, 0, 0};
  const int64_t n_groups = groups.n_groups();
  for (int64_t g = threadIdx.x; g < n_groups; g += blockDim.x) {
    acc = combine(acc, Moments{moments[3 * g], moments[3 * g + 1], moments[3 * g + 2]});
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int width = blockDim.x / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) partial[threadIdx.x] = combine(partial[threadIdx.x], partial[threadIdx.x + width]);
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const Moments total = partial[0];
    const double dof = unbiased ? total.count - 1 : total.count;
    *divisor = (dof > 0 ? sqrt(total.m2 / dof) : 0.0) + eps;  // fewer than two values: std 0
    divisor[1] = total.mean;                                     // normalize_then_sum subtracts it
  }
}

// ---- 5. output -----------------------------------------------------------------------------

// The advantage of a row from its stored value and the batch divisor (nullptr: already final).
// As the CPU kernel: divisor 0 gives 0 (NaN stays NaN); a batch std beyond float64 gives NaN
// on every rewarded row, 0 on the rows without a reward.
template <typename Real>
__device__ __forceinline__ double batch_scaled(const double* advantage, const double* divisor, const Real* rewards,
                                               int64_t row) {
  const double value = advantage[row];
  if (divisor == nullptr) return value;
  const double d = *divisor;
  if (!isfinite(d)) return is_nan(as_double(rewards[row])) ? 0.0 : NAN;
  return d > 0 ? value / d : value * 0.0;
}

template <typename Real>
__global__ void write_rows_kernel(const double* advantage, const double* divisor, const Real* rewards, Real* out,
                                  int64_t n_rows) {
  for (int64_t row = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; row < n_rows; row += int64_t(gridDim.x) * blockDim.x) {
    out[row] = from_value<Real>(batch_scaled(advantage, divisor, rewards, row));
  }
}

// One block per row (grid-stride), threads along the tokens: coalesced mask reads and writes.
template <typename Real, typename MaskT>
__global__ void broadcast_kernel(const double* advantage, const double* divisor, const Real* rewards, const MaskT* mask,
                                 Real* out, int64_t n_rows, int64_t n_tokens, int64_t mask_stride, int64_t out_stride) {
  using Acc = typename Accumulator<Real>::type;
  for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
    const double a64 = batch_scaled(advantage, divisor, rewards, row);
    const Acc a = static_cast<Acc>(a64);
    const MaskT* mk = mask + row * mask_stride;
    Real* o = out + row * out_stride;
    for (int64_t t = threadIdx.x; t < n_tokens; t += blockDim.x) {
      const Acc w = mask_weight<MaskT, Acc>(mk[t]);
      o[t] = from_value<Real>(w != Acc(0) ? a * w : Acc(0));
    }
  }
}

// ---- host side ---------------------------------------------------------------------------------

constexpr int kThreads = 256;

template <typename Real, typename LogpT>
void launch_row_likelihood_for_mask(const AdvantageArrays& a, const AdvantageOptions& opt, double* likelihood, cudaStream_t s) {
  const int blocks = cuda::blocks_for(opt.n_rows * kWarp, kThreads);
  const bool mean = opt.likelihood == Likelihood::kTokenMean;
  const auto* logp = static_cast<const LogpT*>(a.token_logp);
  if (a.mask_dtype == DType::kBool || a.mask_dtype == DType::kUInt8) {
    row_likelihood_kernel<<<blocks, kThreads, 0, s>>>(logp, static_cast<const uint8_t*>(a.mask), likelihood, opt.n_rows,
                                                     opt.n_tokens, opt.logp_row_stride, opt.mask_row_stride, mean);
  } else {
    row_likelihood_kernel<<<blocks, kThreads, 0, s>>>(logp, static_cast<const Real*>(a.mask), likelihood, opt.n_rows,
                                                     opt.n_tokens, opt.logp_row_stride, opt.mask_row_stride, mean);
  }
}

template <typename Real>
void launch_row_likelihood(const AdvantageArrays& a, const AdvantageOptions& opt, double* likelihood, cudaStream_t s) {
  switch (a.logp_dtype) {
    case DType::kFloat16: return launch_row_likelihood_for_mask<Real, __half>(a, opt, likelihood, s);
    case DType::kBFloat16: return launch_row_likelihood_for_mask<Real, __nv_bfloat16>(a, opt, likelihood, s);
    case DType::kFloat64: return launch_row_likelihood_for_mask<Real, double>(a, opt, likelihood, s);
    default: return launch_row_likelihood_for_mask<Real, float>(a, opt, likelihood, s);
  }
}

template <typename Real>
void launch_output(const AdvantageArrays& a, const AdvantageOptions& opt, const double* advantage, const double* divisor,
                   cudaStream_t s) {
  Real* out = static_cast<Real*>(a.out);
  const Real* rewards = static_cast<const Real*>(a.rewards);
  if (a.mask == nullptr) {
    write_rows_kernel<<<cuda::blocks_for(opt.n_rows, kThreads), kThreads, 0, s>>>(advantage, divisor, rewards, out,
                                                                                 opt.n_rows);
    return;
  }
  const int blocks = static_cast<int>(opt.n_rows < 1 << 20 ? (opt.n_rows > 0 ? opt.n_rows : 1) : 1 << 20);
  if (a.mask_dtype == DType::kBool || a.mask_dtype == DType::kUInt8) {
    broadcast_kernel<<<blocks, kThreads, 0, s>>>(advantage, divisor, rewards, static_cast<const uint8_t*>(a.mask), out,
                                                opt.n_rows, opt.n_tokens, opt.mask_row_stride, opt.out_row_stride);
  } else {
    broadcast_kernel<<<blocks, kThreads, 0, s>>>(advantage, divisor, rewards, static_cast<const Real*>(a.mask), out,
                                                opt.n_rows, opt.n_tokens, opt.mask_row_stride, opt.out_row_stride);
  }
}

// Scratch of one call; every buffer is released in stream order when the call returns.
struct Workspace {
  Workspace(int64_t n, cudaStream_t s)
      : n_rows(n),
        stream(s),
        reweighted(sizeof(double) * n, s),
        advantage(sizeof(double) * n, s) {}
  int64_t n_rows;
  cudaStream_t stream;
  StreamBuffer reweighted;
  StreamBuffer advantage;
};

// Stable radix sort of (id, row) pairs, then segment heads: CSR of the groups on the device.
class RaggedGrouping {
 public:
  RaggedGrouping(const int64_t* ids, int64_t n, cudaStream_t s)
      : bytes_(sizeof(int64_t) * static_cast<size_t>(n)),
        sorted_ids_(bytes_, s),
        rows_in_(bytes_, s),
        sorted_rows_(bytes_, s),
        flags_(bytes_, s),
        segment_(bytes_, s),
        start_(bytes_ + sizeof(int64_t), s),
        count_(sizeof(int64_t), s) {
    const int blocks = cuda::blocks_for(n, kThreads);
    iota_kernel<<<blocks, kThreads, 0, s>>>(rows_in_.as<int64_t>(), n);
    size_t sort_bytes = 0;
    check(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, ids, sorted_ids_.as<int64_t>(), rows_in_.as<int64_t>(),
                                          sorted_rows_.as<int64_t>(), n, 0, 64, s),
          "cub sort (size)");
    StreamBuffer sort_temp(sort_bytes, s);
    check(cub::DeviceRadixSort::SortPairs(sort_temp.as<void>(), sort_bytes, ids, sorted_ids_.as<int64_t>(),
                                          rows_in_.as<int64_t>(), sorted_rows_.as<int64_t>(), n, 0, 64, s),
          "cub sort");
    head_flags_kernel<<<blocks, kThreads, 0, s>>>(sorted_ids_.as<int64_t>(), flags_.as<int64_t>(), n);
    size_t scan_bytes = 0;
    check(cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, flags_.as<int64_t>(), segment_.as<int64_t>(), n, s),
          "cub scan (size)");
    StreamBuffer scan_temp(scan_bytes, s);
    check(cub::DeviceScan::InclusiveSum(scan_temp.as<void>(), scan_bytes, flags_.as<int64_t>(), segment_.as<int64_t>(), n, s),
          "cub scan");
    group_starts_kernel<<<blocks, kThreads, 0, s>>>(flags_.as<int64_t>(), segment_.as<int64_t>(), start_.as<int64_t>(),
                                                   count_.as<int64_t>(), n);
  }

  DeviceGroups groups() const { return {0, 0, start_.as<int64_t>(), sorted_rows_.as<int64_t>(), count_.as<int64_t>()}; }

 private:
  size_t bytes_;
  StreamBuffer sorted_ids_, rows_in_, sorted_rows_, flags_, segment_, start_, count_;
};

template <typename Real>
void run(const AdvantageArrays& a, const AdvantageOptions& opt, cudaStream_t s) {
  const int64_t n = opt.n_rows;
  if (n == 0) return;
  Workspace ws(n, s);
  std::unique_ptr<RaggedGrouping> ragged;
  DeviceGroups groups{opt.group_size, opt.group_size > 0 ? n / opt.group_size : 0, nullptr, nullptr, nullptr};
  if (opt.group_size == 0) {
    ragged.reset(new RaggedGrouping(a.group_ids, n, s));
    groups = ragged->groups();
  }
  const int64_t max_groups = opt.group_size > 0 ? n / opt.group_size : n;
  const bool batch = opt.scale == Scale::kBatch;
  StreamBuffer moments(batch || opt.normalize_then_sum() ? sizeof(double) * 3 * max_groups : 0, s);
  StreamBuffer divisor(batch || opt.normalize_then_sum() ? sizeof(double) * 2 : 0, s);  // divisor, mean
  StreamBuffer combined(opt.n_rewards > 0 ? sizeof(double) * n : 0, s);
  const int warp_blocks = cuda::blocks_for(max_groups * kWarp, kThreads);
  const auto* rewards = static_cast<const Real*>(a.rewards);
  const auto* weights = static_cast<const Real*>(a.reward_weights);
  if (opt.n_rewards > 0 && !opt.normalize_then_sum()) {
    sum_rewards_kernel<<<cuda::blocks_for(n, kThreads), kThreads, 0, s>>>(rewards, weights, combined.as<double>(), n,
                                                                        opt.n_rewards);
  }
  if (opt.normalize_then_sum()) {
    StreamBuffer shift(sizeof(double) * max_groups * opt.n_rewards, s), scale(sizeof(double) * max_groups * opt.n_rewards, s);
    normalize_rewards_kernel<<<warp_blocks, kThreads, 0, s>>>(
        rewards, weights, groups, opt.n_rewards, opt.unbiased, opt.eps, opt.signal_tol, shift.as<double>(),
        scale.as<double>(), combined.as<double>(), moments.as<double>(), a.row_has_signal);
    batch_divisor_kernel<<<1, kReduceThreads, 0, s>>>(moments.as<double>(), groups, opt.unbiased, opt.eps, divisor.as<double>());
    normalize_batch_kernel<<<cuda::blocks_for(n, kThreads), kThreads, 0, s>>>(combined.as<double>(), divisor.as<double>(),
                                                                            ws.advantage.as<double>(), n);
    launch_output<Real>(a, opt, ws.advantage.as<double>(), nullptr, s);
    check(cudaGetLastError(), "group_advantages kernel launch");
    return;
  }
  const bool token_likelihood = opt.uses_ranks() && opt.likelihood != Likelihood::kSequence;
  StreamBuffer likelihood(token_likelihood ? sizeof(double) * n : 0, s);
  if (token_likelihood) launch_row_likelihood<Real>(a, opt, likelihood.as<double>(), s);

  const bool pass_k = opt.pass_k > 0;
  StreamBuffer position(pass_k ? sizeof(double) * n : 0, s), sorted(pass_k ? sizeof(double) * n : 0, s),
      expected(pass_k ? sizeof(double) * n : 0, s);

  GroupParams p{groups,
                opt.n_rewards > 0 ? combined.as<double>() : nullptr,
                token_likelihood ? likelihood.as<double>() : nullptr,
                opt.uses_ranks(),
                opt.beta_rank,
                opt.ties_average,
                opt.baseline_loo,
                static_cast<int>(opt.scale),
                opt.unbiased,
                opt.eps,
                opt.singleton_raw,
                ws.reweighted.as<double>(),
                ws.advantage.as<double>(),
                a.row_has_signal,
                moments.as<double>(),
                opt.pass_k,
                opt.signal_tol,
                opt.nan_missing,
                position.as<double>(),
                sorted.as<double>(),
                expected.as<double>()};
  group_kernel<Real><<<warp_blocks, kThreads, 0, s>>>(rewards, static_cast<const Real*>(a.seq_logp), p);
  // Pass@k pools the groups' subset-maximum distributions: a population std, as in a group.
  if (batch) {
    batch_divisor_kernel<<<1, kReduceThreads, 0, s>>>(moments.as<double>(), groups, opt.unbiased && !pass_k, opt.eps,
                                                      divisor.as<double>());
  }
  launch_output<Real>(a, opt, ws.advantage.as<double>(), batch ? divisor.as<double>() : nullptr, s);
  check(cudaGetLastError(), "group_advantages kernel launch");
}

}  // namespace

void group_advantages_cuda(const AdvantageArrays& a, const AdvantageOptions& opt, int device, uintptr_t stream) {
  check_advantage_options(opt, a);
  cuda::DeviceGuard guard(device);
  const cudaStream_t s = cuda::as_stream(stream);
  switch (a.out_dtype) {
    case DType::kFloat16: return run<__half>(a, opt, s);
    case DType::kBFloat16: return run<__nv_bfloat16>(a, opt, s);
    case DType::kFloat64: return run<double>(a, opt, s);
    case DType::kFloat32: return run<float>(a, opt, s);
    default: require(false, "rewards must be a float dtype");
  }
}

}  // namespace fk
