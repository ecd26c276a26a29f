// CPU implementation of the group-relative advantage contract in advantage.h.
//
// Data flow, one pass over the big [N, T] arrays where the options allow:
//   for each group (in parallel, fixed chunks):
//     likelihood of each row (masked token reduction, rows of the group are hot in cache),
//     ranks, rank reweighting, group mean / std, advantages,
//     and, unless the scale needs the whole batch, the token broadcast of the same rows.
//   scale == "batch" adds one serial combine of per-group moments and a second row pass.
#include "advantage.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "grouping.h"

namespace fk {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// t, or 0 for NaN, without a branch: NaN rewards are scattered at random, and a branch on
// them mispredicts (3x slower multi-reward loops at 5 % NaN).
inline double zero_if_nan(double t) {
#if defined(__SSE2__)
  const __m128d v = _mm_set_sd(t);
  return _mm_cvtsd_f64(_mm_and_pd(v, _mm_cmpord_sd(v, v)));
#else
  return t == t ? t : 0.0;
#endif
}

// ----------------------------------------------------------------------------------------
// Token-level pieces: a masked row reduction and the masked broadcast.

template <typename MaskT, typename Acc>
inline Acc mask_weight(MaskT m) {
  if constexpr (std::is_same_v<MaskT, uint8_t>) {
    return m ? Acc(1) : Acc(0);
  } else {
    return static_cast<Acc>(m);
  }
}

#if defined(__SSE2__)
// 16 mask bytes -> four 4-lane masks (all ones where the byte is non-zero).
inline void byte_masks(const uint8_t* mask, __m128i out[4]) {
  const __m128i zero = _mm_setzero_si128();
  const __m128i set = _mm_xor_si128(_mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mask)), zero),
                                    _mm_set1_epi8(-1));
  const __m128i low = _mm_unpacklo_epi8(set, set), high = _mm_unpackhi_epi8(set, set);
  out[0] = _mm_unpacklo_epi16(low, low);
  out[1] = _mm_unpackhi_epi16(low, low);
  out[2] = _mm_unpacklo_epi16(high, high);
  out[3] = _mm_unpackhi_epi16(high, high);
}
#endif

// Masked sum of log-probs and of mask weights over one row.  Positions with a zero mask are
// never multiplied (padding may hold -inf or NaN).  Sixteen independent lanes in a fixed order
// let the compiler vectorise while keeping the result independent of threads and machines.
template <typename LogpT, typename MaskT>
double row_likelihood(const LogpT* logp, const MaskT* mask, int64_t n_tokens, bool mean) {
  using Acc = std::conditional_t<std::is_same_v<LogpT, double>, double, float>;
  constexpr int kLanes = 16;
  Acc sum[kLanes] = {};
  Acc weight[kLanes] = {};
  int64_t t = 0;
#if defined(__SSE2__)
  if constexpr (std::is_same_v<LogpT, float> && std::is_same_v<MaskT, uint8_t>) {
    // The common case (float32 log-probs, bool mask) by hand: the same 16 lanes, the same
    // order, so bit-identical to the loop below, at memory speed.
    __m128 acc[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    __m128i count[4] = {_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128()};
    for (; t + kLanes <= n_tokens; t += kLanes) {
      __m128i on[4];
      byte_masks(mask + t, on);
      for (int q = 0; q < 4; ++q) {
        acc[q] = _mm_add_ps(acc[q], _mm_and_ps(_mm_castsi128_ps(on[q]), _mm_loadu_ps(logp + t + 4 * q)));
        count[q] = _mm_sub_epi32(count[q], on[q]);
      }
    }
    for (int q = 0; q < 4; ++q) {
      _mm_storeu_ps(sum + 4 * q, acc[q]);
      alignas(16) int32_t c[4];
      _mm_store_si128(reinterpret_cast<__m128i*>(c), count[q]);
      for (int k = 0; k < 4; ++k) weight[4 * q + k] = static_cast<Acc>(c[k]);
    }
  }
#endif
  for (; t + kLanes <= n_tokens; t += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const Acc w = mask_weight<MaskT, Acc>(mask[t + k]);
      const Acc v = static_cast<Acc>(logp[t + k]);
      sum[k] += w != Acc(0) ? w * v : Acc(0);
      weight[k] += w;
    }
  }
  for (int k = 0; t < n_tokens; ++t, ++k) {
    const Acc w = mask_weight<MaskT, Acc>(mask[t]);
    sum[k] += w != Acc(0) ? w * static_cast<Acc>(logp[t]) : Acc(0);
    weight[k] += w;
  }
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int k = 0; k < width; ++k) {
      sum[k] += sum[k + width];
      weight[k] += weight[k + width];
    }
  }
  if (!mean) return static_cast<double>(sum[0]);
  // An empty response has log-probability 0 (probability 1) under either reduction.
  return weight[0] != Acc(0) ? static_cast<double>(sum[0]) / static_cast<double>(weight[0]) : 0.0;
}

// out[t] = A * mask[t]; a byte mask selects (no -0.0 for negative A on padding).
template <typename Real, typename MaskT>
inline void broadcast_row(Real advantage, const MaskT* mask, Real* out, int64_t n_tokens, bool streaming) {
  if constexpr (std::is_same_v<MaskT, uint8_t>) {
    int64_t t = 0;
#if defined(__SSE2__)
    if constexpr (std::is_same_v<Real, float>) {
      // Streaming stores: the [N, T] result is far larger than the caches and is not read
      // back here, so skipping the read-for-ownership of each line saves a third of the
      // traffic.  The caller issues the fence (end_streaming_stores) before returning.
      const __m128 value = _mm_set1_ps(advantage);
      for (; t < n_tokens && (reinterpret_cast<uintptr_t>(out + t) & 15) != 0; ++t) out[t] = mask[t] ? advantage : Real(0);
      for (; t + 16 <= n_tokens; t += 16) {
        __m128i on[4];
        byte_masks(mask + t, on);
        for (int q = 0; q < 4; ++q) {
          const __m128 v = _mm_and_ps(_mm_castsi128_ps(on[q]), value);
          if (streaming) {
            _mm_stream_ps(out + t + 4 * q, v);
          } else {
            _mm_store_ps(out + t + 4 * q, v);
          }
        }
      }
    }
#endif
    for (; t < n_tokens; ++t) out[t] = mask[t] ? advantage : Real(0);
  } else {
    for (int64_t t = 0; t < n_tokens; ++t) out[t] = advantage * mask[t];
  }
}

// Streaming stores are weakly ordered: fence them before the results are handed over.
inline void end_streaming_stores() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// ----------------------------------------------------------------------------------------
// How many of a group's likelihoods are below, equal to, and equal-and-before position j.
struct RankCounts {
  int64_t less = 0, equal = 0, equal_before = 0;
};

inline RankCounts count_ranks_scalar(const double* key, int64_t m, int64_t j) {
  RankCounts c;
  for (int64_t k = 0; k < m; ++k) {
    c.less += key[k] < key[j];
    c.equal += key[k] == key[j];
    c.equal_before += k < j && key[k] == key[j];
  }
  return c;
}

#if defined(__SSE2__)
// Ranks of four positions j0..j0+3 at once, against every key of the group: the four pivots
// sit in one register and each key is broadcast, so the counts accumulate per lane with no
// horizontal sums.  Only used when every key of the group is exactly a float32 (always so for
// float32 inputs), so the comparisons are exactly those of the doubles.  Branch-free: a
// sort's comparisons would mispredict on random likelihoods.
template <bool kAverage>
inline void ranks_of_four_sse(const float* key, int64_t m, int64_t j0, double* rank) {
  const __m128 pivots = _mm_loadu_ps(key + j0);  // the caller pads key to a multiple of four
  const __m128i positions = _mm_add_epi32(_mm_set1_epi32(static_cast<int32_t>(j0)), _mm_set_epi32(3, 2, 1, 0));
  __m128i less = _mm_setzero_si128(), equal = _mm_setzero_si128(), equal_before = _mm_setzero_si128();
  for (int64_t k = 0; k < m; ++k) {
    const __m128 other = _mm_set1_ps(key[k]);
    const __m128i is_less = _mm_castps_si128(_mm_cmplt_ps(other, pivots));  // -1 where key[k] < pivot
    const __m128i is_equal = _mm_castps_si128(_mm_cmpeq_ps(other, pivots));
    less = _mm_sub_epi32(less, is_less);
    if constexpr (kAverage) {
      equal = _mm_sub_epi32(equal, is_equal);
    } else {  // "first" (also pass@k's stable sorted positions): ties before the pivot only
      const __m128i before = _mm_cmpgt_epi32(positions, _mm_set1_epi32(static_cast<int32_t>(k)));
      equal_before = _mm_sub_epi32(equal_before, _mm_and_si128(is_equal, before));
    }
  }
  const bool average = kAverage;
  alignas(16) int32_t l[4], e[4], b[4];
  _mm_store_si128(reinterpret_cast<__m128i*>(l), less);
  _mm_store_si128(reinterpret_cast<__m128i*>(e), equal);
  _mm_store_si128(reinterpret_cast<__m128i*>(b), equal_before);
  for (int q = 0; q < 4 && j0 + q < m; ++q) {
    rank[j0 + q] = average ? static_cast<double>(l[q]) + 0.5 * static_cast<double>(e[q] - 1)
                           : static_cast<double>(l[q] + b[q]);
  }
}
#endif

// Ranks within one group: 0 = least likely.  A stable sort of (likelihood, position) pairs,
// then one walk over runs of equal likelihoods: "first" keeps the sorted position (ties in
// row order), "average" gives every member of a run the run's mean position.
// `order` and `sorted_key` are scratch of at least m elements.
void ranks_in_group(const double* likelihood, int64_t m, bool average, double* rank, int64_t* order,
                    double* sorted_key) {
  if (m <= 32) {
    // Small groups (the usual GRPO case): counting, four positions at a time where exact.
    bool exact_in_float = true;
    float narrow[36];
    for (int64_t k = 0; k < m; ++k) {
      narrow[k] = static_cast<float>(likelihood[k]);
      exact_in_float &= static_cast<double>(narrow[k]) == likelihood[k];
    }
#if defined(__SSE2__)
    if (exact_in_float) {
      for (int64_t k = m; k < m + 4; ++k) narrow[k] = 0.0f;  // padding of the last pivot load
      for (int64_t j0 = 0; j0 < m; j0 += 4) {
        if (average) {
          ranks_of_four_sse<true>(narrow, m, j0, rank);
        } else {
          ranks_of_four_sse<false>(narrow, m, j0, rank);
        }
      }
      return;
    }
#endif
    for (int64_t j = 0; j < m; ++j) {
      const RankCounts c = count_ranks_scalar(likelihood, m, j);
      rank[j] = average ? static_cast<double>(c.less) + 0.5 * static_cast<double>(c.equal - 1)
                        : static_cast<double>(c.less + c.equal_before);
    }
    return;
  } else {
    std::iota(order, order + m, 0);
    std::stable_sort(order, order + m, [&](int64_t x, int64_t y) { return likelihood[x] < likelihood[y]; });
    for (int64_t k = 0; k < m; ++k) sorted_key[k] = likelihood[order[k]];
  }
  for (int64_t begin = 0; begin < m;) {
    int64_t end = begin + 1;
    while (end < m && sorted_key[end] == sorted_key[begin]) ++end;
    const double run_mean = 0.5 * static_cast<double>(begin + end - 1);
    for (int64_t k = begin; k < end; ++k) rank[order[k]] = average ? run_mean : static_cast<double>(k);
    begin = end;
  }
}

// Sum of x (or of squared deviations from `center`) over four interleaved lanes: a fixed
// order (deterministic) that breaks the add latency chain of a plain loop.
inline double lane_sum(const double* x, int64_t m, double center, bool squared = false) {
  double lane[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t j = 0;
  for (; j + 4 <= m; j += 4) {
    for (int k = 0; k < 4; ++k) {
      const double d = x[j + k] - center;
      lane[k] += squared ? d * d : x[j + k];
    }
  }
  for (int k = 0; j < m; ++j, ++k) {
    const double d = x[j] - center;
    lane[k] += squared ? d * d : x[j];
  }
  return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

inline bool all_equal(const double* x, int64_t m) {
  bool equal = true;
  for (int64_t j = 1; j < m; ++j) equal &= x[j] == x[0];
  return equal;
}

// Moments of one group's reweighted rewards, kept for the batch-wide std.
struct Moments {
  int64_t count = 0;
  double mean = 0.0;
  double m2 = 0.0;  // sum of squared deviations from the mean
};

// Chan et al.'s pairwise update; combined in group order, so deterministic.
Moments combine(const std::vector<Moments>& groups) {
  Moments total;
  for (const Moments& g : groups) {
    if (g.count == 0) continue;
    const double n = static_cast<double>(total.count + g.count);
    const double delta = g.mean - total.mean;
    total.mean += delta * static_cast<double>(g.count) / n;
    total.m2 += g.m2 + delta * delta * static_cast<double>(total.count) * static_cast<double>(g.count) / n;
    total.count += g.count;
  }
  return total;
}

double std_from(double m2, int64_t count, bool unbiased) {
  const int64_t dof = unbiased ? count - 1 : count;
  return dof > 0 ? std::sqrt(m2 / static_cast<double>(dof)) : 0.0;  // fewer than two values: 0
}

// ----------------------------------------------------------------------------------------
// Pass@k (advantage.h).  Coefficients of a group of m rows for k' = min(k, m), by 0-based
// sorted position p = j - 1:  top[p] = a_j = C(j-1, k'-1) / C(m-1, k'-1) and
// tail[p] = a_j (k'-1) / (j-1) (the weight of r(j) in E(i) for every i < j).  Products of
// ratios from a_m = 1 downward, a_{j-1} = a_j (j-k') / (j-1): no binomial is ever formed, so
// nothing overflows (m = 10,000 and k = 5,000 have C ~ 1e3008), and the relative error grows
// by one rounding per step (<= ~1e-12 at m = 10,000).  The a_j of low positions underflow to 0
// long before they could matter next to a_m = 1.
struct PassAtKCoefficients {
  int64_t m = -1;
  int64_t k = 0;  // k' = min(k, m)
  std::vector<double> top, tail;

  void fit(int64_t rows, int64_t pass_k) {
    const int64_t k_eff = std::min(pass_k, rows);
    if (rows == m && k_eff == k) return;  // groups of one size reuse them (fixed groups: always)
    m = rows;
    k = k_eff;
    top.assign(m, 0.0);
    tail.assign(m, 0.0);
    double a = 1.0;
    for (int64_t j = m; j >= 1 && a != 0.0; --j) {
      top[j - 1] = a;
      if (j >= 2) {
        tail[j - 1] = a * (static_cast<double>(k - 1) / static_cast<double>(j - 1));
        a *= static_cast<double>(std::max<int64_t>(j - k, 0)) / static_cast<double>(j - 1);
      }
    }
  }
};

// The pass@k statistics of one group, in place: x[0..m) (the group's rewards, any order) becomes
// E_i - mu; returns mu and sigma.  `position` holds the stable sorted position of each x
// (ranks "first"); `sorted` and `expected` are scratch of m.
struct PassAtKMoments {
  double mu = 0.0;
  double variance = 0.0;
};

// Stable sorted positions (ties in row order: ranks "first") of a group that holds at most
// kFewValues distinct values, as 0/1 or graded rewards do: rows below each value, then row order
// within it.  O(m * D) instead of the O(m^2) counting of ranks_in_group, same positions.
// Returns false (nothing written) when the group holds more distinct values.
constexpr int kFewValues = 8;

bool positions_by_value(const double* x, int64_t m, double* position) {
  double value[kFewValues];
  int64_t next[kFewValues];
  int distinct = 0;
  // Which value each row holds, without data-dependent branches (rows come in random order):
  // the index of the one value it equals.
  auto value_index = [&](double v) {
    int index = 0;
    for (int u = 0; u < distinct; ++u) index += u * (value[u] == v);
    return index;
  };
  for (int64_t j = 0; j < m; ++j) {
    bool known = false;
    for (int u = 0; u < distinct; ++u) known |= value[u] == x[j];
    if (!known) {  // rare: at most kFewValues times per group
      if (distinct == kFewValues) return false;
      value[distinct] = x[j];
      next[distinct++] = 0;
    }
    ++next[value_index(x[j])];  // count of the value, for now
  }
  int64_t first[kFewValues];
  for (int v = 0; v < distinct; ++v) {  // first slot of each value: the count of smaller values
    first[v] = 0;
    for (int u = 0; u < distinct; ++u) first[v] += value[u] < value[v] ? next[u] : 0;
  }
  for (int v = 0; v < distinct; ++v) next[v] = first[v];
  for (int64_t j = 0; j < m; ++j) position[j] = static_cast<double>(next[value_index(x[j])]++);
  return true;
}

PassAtKMoments center_pass_at_k(double* x, int64_t m, const PassAtKCoefficients& c, const double* position,
                                double* sorted, double* expected) {
  // E_i - mu does not change when every reward moves by the same amount (the weights of a
  // row's E, and those of mu, sum to 1).  Measured from the group's best reward, the values
  // that dominate (the top ones, for large k) are 0 and E_i, mu keep their small differences
  // exactly: with 0/1 rewards and mu = 1 - 6e-8, E_i - mu is then accurate to the last bits
  // instead of to 1e-16 / 6e-8.
  double best = x[0];
  for (int64_t j = 1; j < m; ++j) best = std::max(best, x[j]);
  for (int64_t j = 0; j < m; ++j) sorted[static_cast<int64_t>(position[j])] = x[j] - best;
  double tail = 0.0, first = 0.0;
  double above = std::numeric_limits<double>::quiet_NaN(), e_above = 0.0;  // the previous (higher) slot
  for (int64_t p = m - 1; p >= 0; --p) {
    const double v = sorted[p];
    // Equal rewards have equal E mathematically (Pascal's rule); give them the same double,
    // the one at the top of their run, so the result does not depend on the order of rows.
    const double e = v == above ? e_above : c.top[p] * v + tail;
    expected[p] = e;
    above = v;
    e_above = e;
    tail += c.tail[p] * v;
    first += c.top[p] * v;
  }
  const double share = static_cast<double>(c.k) / static_cast<double>(m);  // P(row j is the max) = share * a_j
  PassAtKMoments moments;
  moments.mu = first * share;  // measured from `best`
  double spread = 0.0;  // centred second moment: no cancellation for rewards far from 0
  for (int64_t p = m - 1; p >= 0; --p) {
    const double d = sorted[p] - moments.mu;
    spread += c.top[p] * (d * d);
  }
  moments.variance = spread * share;
  for (int64_t j = 0; j < m; ++j) x[j] = expected[static_cast<int64_t>(position[j])] - moments.mu;
  moments.mu += best;
  return moments;
}

// ----------------------------------------------------------------------------------------

template <typename Real, typename LogpT, typename MaskT>
class AdvantageKernel {
 public:
  AdvantageKernel(const AdvantageArrays& a, const AdvantageOptions& opt, const Grouping& grouping)
      : opt_(opt),
        grouping_(grouping),
        rewards_(static_cast<const Real*>(a.rewards)),
        reward_weights_(static_cast<const Real*>(a.reward_weights)),
        seq_logp_(static_cast<const Real*>(a.seq_logp)),
        token_logp_(static_cast<const LogpT*>(a.token_logp)),
        mask_(static_cast<const MaskT*>(a.mask)),
        out_(static_cast<Real*>(a.out)),
        row_has_signal_(a.row_has_signal) {}

  void run() {
    const int64_t n_groups = grouping_.n_groups;
    if (opt_.normalize_then_sum()) {
      combine_rewards();
      return finish_normalize_then_sum();
    }
    const bool batch_scale = opt_.scale == Scale::kBatch;
    // Rows are written in a second, sequential pass when the batch std is needed first, or
    // when ragged groups would scatter the [N, T] writes over the batch (2.5x slower).
    deferred_ = batch_scale || (grouping_.fixed_size == 0 && mask_ != nullptr);
    if (deferred_) row_value_.assign(opt_.n_rows, 0.0);
    if (batch_scale) moments_.assign(n_groups, Moments{});
    const int64_t rows_per_group = std::max<int64_t>(1, opt_.n_rows / std::max<int64_t>(1, n_groups));
    const int64_t cost_per_row = 1 + opt_.n_tokens / 64;
    if (grouping_.fixed_size == 0 && opt_.uses_ranks() && opt_.likelihood != Likelihood::kSequence) {
      // Ragged groups scatter their rows over the batch: reduce the token log-probs in one
      // sequential pass (prefetch-friendly) instead of in group order.
      row_likelihood_.resize(opt_.n_rows);
      parallel_chunks(opt_.n_rows, std::max<int64_t>(1, 65536 / cost_per_row), [&](int64_t, int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) row_likelihood_[row] = token_likelihood(row);
      });
    }
    const int64_t chunk = std::max<int64_t>(1, 8192 / (rows_per_group * cost_per_row));
    parallel_chunks(n_groups, chunk, [&](int64_t, int64_t begin, int64_t end) {
      Scratch scratch;
      for (int64_t g = begin; g < end; ++g) process_group(g, scratch);
      end_streaming_stores();
    });
    if (!deferred_) return;
    double divisor = 1.0;
    if (batch_scale) {
      const Moments batch = combine(moments_);
      // Pass@k pools the groups' subset-maximum distributions: a population std, as in a group.
      divisor = std_from(batch.m2, batch.count, opt_.unbiased && opt_.pass_k == 0) + opt_.eps;
    }
    parallel_chunks(opt_.n_rows, std::max<int64_t>(1, 65536 / cost_per_row), [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) write_row(row, batch_scaled(row_value_[row], divisor, row));
      end_streaming_stores();
    });
  }

 private:
  // Per-thread buffers sized to the largest group seen so far.
  struct Scratch {
    std::vector<int64_t> rows;      // rows of the group that carry a reward
    std::vector<double> reward;     // their rewards, then reweighted rewards, then advantages
    std::vector<double> likelihood;
    std::vector<double> rank;
    std::vector<double> sorted_key;
    std::vector<int64_t> order;
    std::vector<double> position, sorted, expected;  // pass@k
    PassAtKCoefficients pass_at_k;                     // of the last group size seen

    void fit(int64_t size) {
      if (static_cast<int64_t>(rows.size()) >= size) return;
      for (auto* v : {&reward, &likelihood, &rank, &sorted_key, &position, &sorted, &expected}) v->resize(size);
      rows.resize(size);
      order.resize(size);
    }
  };

  // The deferred value of a row divided by the batch divisor.  Divisor 0 (std 0 with eps = 0):
  // every centred value is 0, so is the advantage.  A batch std beyond float64: no rewarded
  // row has a defined advantage (NaN); rows without a reward keep 0.
  double batch_scaled(double value, double divisor, int64_t row) const {
    if (!std::isfinite(divisor)) return std::isnan(static_cast<double>(rewards_[row])) ? 0.0 : kNaN;
    return divisor > 0.0 ? value / divisor : value * 0.0;
  }

  // The row's reward: its value, or (sum_then_normalize) the weighted nansum of its R rewards,
  // computed where it is read (a pre-pass would cost one more parallel region per call).
  double reward_of(int64_t row) const {
    return opt_.n_rewards == 0 ? static_cast<double>(rewards_[row]) : weighted_sum(row);
  }

  // ---- several rewards per row -------------------------------------------------------------

  // sum_then_normalize: nansum_k w_k r_ik; NaN when every reward of the row is NaN (an
  // unscorable row, as TRL).  Branch-free: NaN products add 0.
  double weighted_sum(int64_t row) const {
    const Real* r = rewards_ + row * opt_.n_rewards;
    double sum = 0.0;
    int64_t present = 0;
    for (int64_t k = 0; k < opt_.n_rewards; ++k) {
      const double v = static_cast<double>(r[k]);
      const double term = static_cast<double>(reward_weights_[k]) * v;
      present += v == v;
      sum += zero_if_nan(term);
    }
    return present ? sum : kNaN;
  }

  // normalize_then_sum: s_i of advantage.h into combined_, per group the weighted nansum of
  // per-reward z-scores (TRL's code).
  void combine_rewards() {
    combined_.assign(opt_.n_rows, 0.0);
    moments_.assign(grouping_.n_groups, Moments{});
    parallel_chunks(grouping_.n_groups, 64, [&](int64_t, int64_t begin, int64_t end) {
      ColumnScratch scratch(opt_.n_rewards);
      for (int64_t g = begin; g < end; ++g) normalize_group_rewards(g, scratch);
    });
  }

  struct ColumnScratch {
    explicit ColumnScratch(int64_t n_rewards) : sum(n_rewards), count(n_rewards), m2(n_rewards), inverse(n_rewards) {}
    std::vector<double> sum, count, m2, inverse;  // per reward: then mean in sum, 1 / (std + eps)
    std::vector<double> values;                   // the group's scorable s
  };

  // One group of normalize_then_sum: per reward, mean and std over the group's non-NaN values
  // (row-major passes); a reward with too few values for a std (unbiased: < 2) adds nothing,
  // as TRL's NaN z.  Then s per row, the group's moments of s and its signal flag.
  void normalize_group_rewards(int64_t g, ColumnScratch& c) {
    const int64_t size = grouping_.size(g), R = opt_.n_rewards;
    std::fill(c.sum.begin(), c.sum.end(), 0.0);
    std::fill(c.count.begin(), c.count.end(), 0.0);
    std::fill(c.m2.begin(), c.m2.end(), 0.0);
    for (int64_t j = 0; j < size; ++j) {
      const Real* r = rewards_ + grouping_.row(g, j) * R;
      for (int64_t k = 0; k < R; ++k) {
        const double v = static_cast<double>(r[k]);
        c.count[k] += v == v;
        c.sum[k] += zero_if_nan(v);
      }
    }
    for (int64_t k = 0; k < R; ++k) c.sum[k] = c.count[k] > 0 ? c.sum[k] / c.count[k] : 0.0;  // mean
    for (int64_t j = 0; j < size; ++j) {
      const Real* r = rewards_ + grouping_.row(g, j) * R;
      for (int64_t k = 0; k < R; ++k) {
        const double d = static_cast<double>(r[k]) - c.sum[k];
        c.m2[k] += zero_if_nan(d * d);
      }
    }
    for (int64_t k = 0; k < R; ++k) {
      const int64_t count = static_cast<int64_t>(c.count[k]);
      const int64_t dof = opt_.unbiased ? count - 1 : count;
      c.inverse[k] = dof > 0 ? 1.0 / (std_from(c.m2[k], count, opt_.unbiased) + opt_.eps) : 0.0;
    }
    c.values.clear();
    for (int64_t j = 0; j < size; ++j) {
      const int64_t row = grouping_.row(g, j);
      const Real* r = rewards_ + row * R;
      double sum = 0.0;
      int64_t present = 0;
      for (int64_t k = 0; k < R; ++k) {
        const double v = static_cast<double>(r[k]);
        present += v == v;
        const double term = static_cast<double>(reward_weights_[k]) * ((v - c.sum[k]) * c.inverse[k]);
        sum += zero_if_nan(term);  // a reward without a std (inverse 0) adds 0 (or NaN for inf: 0)
      }
      const double value = present ? sum : kNaN;
      combined_[row] = value;
      if (present) c.values.push_back(value);
    }
    const int64_t m = static_cast<int64_t>(c.values.size());
    const double mean = m ? lane_sum(c.values.data(), m, 0.0) / static_cast<double>(m) : 0.0;
    moments_[g] = Moments{m, mean, m ? lane_sum(c.values.data(), m, mean, /*squared=*/true) : 0.0};
    if (row_has_signal_ != nullptr) {
      const bool signal = group_signal(c.values.data(), m);
      for (int64_t j = 0; j < size; ++j) row_has_signal_[grouping_.row(g, j)] = signal;
    }
  }

  // A_i = (s_i - mean(s)) / (std(s) + eps) over the batch; unscorable rows get 0.
  void finish_normalize_then_sum() {
    const Moments batch = combine(moments_);
    const double mean = batch.mean;
    const double inverse = 1.0 / (std_from(batch.m2, batch.count, opt_.unbiased) + opt_.eps);
    const int64_t cost_per_row = 1 + opt_.n_tokens / 64;
    parallel_chunks(opt_.n_rows, std::max<int64_t>(1, 65536 / cost_per_row), [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const double s = combined_[row];
        write_row(row, std::isnan(s) ? 0.0 : (s - mean) * inverse);
      }
      end_streaming_stores();
    });
  }

  double token_likelihood(int64_t row) const {
    return row_likelihood(token_logp_ + row * opt_.logp_row_stride, mask_ + row * opt_.mask_row_stride,
                          opt_.n_tokens, opt_.likelihood == Likelihood::kTokenMean);
  }

  double likelihood_of(int64_t row) const {
    if (opt_.likelihood == Likelihood::kSequence) return static_cast<double>(seq_logp_[row]);
    return row_likelihood_.empty() ? token_likelihood(row) : row_likelihood_[row];
  }

  void write_row(int64_t row, double advantage) const {
    const Real a = static_cast<Real>(advantage);
    if (mask_ == nullptr) {
      out_[row] = a;
    } else {
      broadcast_row(a, mask_ + row * opt_.mask_row_stride, out_ + row * opt_.out_row_stride, opt_.n_tokens,
                    opt_.streaming_stores);
    }
  }

  // Gathers the group's rewarded rows (branch-free append).
  int64_t gather_rewarded(int64_t g, Scratch& s) const {
    const int64_t size = grouping_.size(g);
    int64_t* rows = s.rows.data();
    double* reward = s.reward.data();
    int64_t m = 0;
    for (int64_t j = 0; j < size; ++j) {
      const int64_t row = grouping_.row(g, j);
      const double r = reward_of(row);
      rows[m] = row;
      reward[m] = r;
      m += !std::isnan(r);
    }
    return m;
  }

  // Rows without a reward: 0 when NaN means missing (deferred rows: row_value_ already holds
  // 0), NaN for every row of the group when NaN propagates.
  void write_unrewarded(int64_t g, bool whole_group) {
    const double value = whole_group ? kNaN : 0.0;
    for (int64_t j = 0; j < grouping_.size(g); ++j) {
      const int64_t row = grouping_.row(g, j);
      if (!whole_group && !std::isnan(reward_of(row))) continue;
      if (deferred_) {
        row_value_[row] = value;
      } else {
        write_row(row, value);
      }
    }
  }

  // advantage.h: std > signal_tol, or (signal_tol = 0) not all equal; never with < 2 rows.
  bool group_signal(const double* reward, int64_t m) const {
    if (m < 2) return false;
    if (opt_.signal_tol == 0.0) {
      bool unequal = false;
      for (int64_t j = 1; j < m; ++j) unequal |= reward[j] != reward[0];
      return unequal;
    }
    const double mean = lane_sum(reward, m, 0.0) / static_cast<double>(m);
    return std_from(lane_sum(reward, m, mean, /*squared=*/true), m, opt_.unbiased) > opt_.signal_tol;
  }

  void write_signal(int64_t g, bool signal) const {
    for (int64_t j = 0; j < grouping_.size(g); ++j) row_has_signal_[grouping_.row(g, j)] = signal;
  }

  void process_group(int64_t g, Scratch& s) {
    const int64_t size = grouping_.size(g);
    s.fit(size);
    const int64_t m = gather_rewarded(g, s);
    double* x = s.reward.data();
    const bool propagate_nan = !opt_.nan_missing && m < size;
    if (row_has_signal_ != nullptr) write_signal(g, !propagate_nan && group_signal(x, m));
    if (m < size) write_unrewarded(g, propagate_nan);
    if (m == 0 || propagate_nan) return;  // a NaN-poisoned group stays out of the batch std
    bool poisoned = opt_.uses_ranks() && reweight_by_rank(s, m);
    if (opt_.pass_k > 0 && m >= 2) return finish_pass_at_k(g, s, m, poisoned);

    const double sum = lane_sum(x, m, 0.0);
    const bool constant = m >= 2 && all_equal(x, m);
    // A constant group's mean is its value exactly, and its squared deviations are exactly 0
    // (sum / m may differ from the value in the last bit, and eps = 0 would blow that up).
    const double mean = constant ? x[0] : sum / static_cast<double>(m);
    const double m2 = constant ? 0.0 : lane_sum(x, m, mean, /*squared=*/true);
    // An infinite reward (or a sum / squared deviation beyond float64) leaves no defined
    // statistics: the group is poisoned like one with a NaN likelihood.
    poisoned |= !std::isfinite(sum) || (opt_.scale != Scale::kNone && !std::isfinite(m2));
    // A poisoned group stays out of the batch std: its advantages are NaN anyway.
    if (opt_.scale == Scale::kBatch && !poisoned) moments_[g] = Moments{m, mean, m2};

    // Singletons: "zero" gives 0; "raw" (verl) takes baseline 0 and a group std of 1.
    const bool singleton = m == 1;
    if (singleton) {
      x[0] = opt_.singleton_raw ? x[0] : 0.0;
    } else if (constant) {
      std::fill(x, x + m, 0.0);  // every baseline equals the value: exactly 0
    } else if (opt_.baseline_loo) {
      const double others = static_cast<double>(m - 1);
      for (int64_t j = 0; j < m; ++j) x[j] -= (sum - x[j]) / others;
    } else {
      for (int64_t j = 0; j < m; ++j) x[j] -= mean;
    }
    if (poisoned) std::fill(x, x + m, kNaN);
    const double group_std = singleton ? 1.0 : std_from(m2, m, opt_.unbiased);
    write_centered(s, m, group_std);
  }

  // Pass@k groups (m >= 2): E_i - mu from the sorted (reweighted) rewards, then the scale.
  void finish_pass_at_k(int64_t g, Scratch& s, int64_t m, bool poisoned) {
    double* x = s.reward.data();
    if (!positions_by_value(x, m, s.position.data())) {
      ranks_in_group(x, m, /*average=*/false, s.position.data(), s.order.data(), s.sorted_key.data());
    }
    s.pass_at_k.fit(m, opt_.pass_k);
    const PassAtKMoments moments =
        center_pass_at_k(x, m, s.pass_at_k, s.position.data(), s.sorted.data(), s.expected.data());
    if (opt_.scale == Scale::kBatch && !poisoned) {
      moments_[g] = Moments{m, moments.mu, moments.variance * static_cast<double>(m)};
    }
    if (poisoned) std::fill(x, x + m, kNaN);
    write_centered(s, m, std::sqrt(std::max(moments.variance, 0.0)));
  }

  // Writes the group's centred values x[0..m) divided as the scale says (group: by group_std + eps).
  void write_centered(const Scratch& s, int64_t m, double group_std) {
    const double* x = s.reward.data();
    const int64_t* rows = s.rows.data();
    if (opt_.scale == Scale::kBatch) {
      for (int64_t j = 0; j < m; ++j) row_value_[rows[j]] = x[j];
      return;
    }
    const double divisor = opt_.scale == Scale::kGroup ? group_std + opt_.eps : 1.0;
    // One division per group, not per row.  Divisor 0 (std 0 with eps = 0): the group is
    // constant (centred values exactly 0) or its differences are so small (< ~1e-154) that
    // their squares underflow; either way the advantage is 0 (a poisoned NaN stays NaN).
    const double inverse = divisor > 0.0 ? 1.0 / divisor : 0.0;
    if (deferred_) {
      for (int64_t j = 0; j < m; ++j) row_value_[rows[j]] = x[j] * inverse;
    } else if (mask_ == nullptr) {
      for (int64_t j = 0; j < m; ++j) out_[rows[j]] = static_cast<Real>(x[j] * inverse);
    } else {
      for (int64_t j = 0; j < m; ++j) write_row(rows[j], x[j] * inverse);
    }
  }

  // r' = r * (1 - beta * rank / m).  Returns true when a likelihood is NaN (group poisoned).
  bool reweight_by_rank(Scratch& s, int64_t m) const {
    double* likelihood = s.likelihood.data();
    bool any_nan = false;
    for (int64_t j = 0; j < m; ++j) {
      likelihood[j] = likelihood_of(s.rows[j]);
      any_nan |= std::isnan(likelihood[j]);
    }
    if (any_nan) return true;
    ranks_in_group(likelihood, m, opt_.ties_average, s.rank.data(), s.order.data(), s.sorted_key.data());
    for (int64_t j = 0; j < m; ++j) s.reward[j] *= 1.0 - opt_.beta_rank * s.rank[j] / static_cast<double>(m);
    return false;
  }

  const AdvantageOptions& opt_;
  const Grouping& grouping_;
  const Real* rewards_;
  const Real* reward_weights_;
  const Real* seq_logp_;
  const LogpT* token_logp_;
  const MaskT* mask_;
  Real* out_;
  bool* row_has_signal_;
  bool deferred_ = false;          // rows written by a second, sequential pass (see run())
  std::vector<double> row_value_;  // deferred rows: advantage, or numerator awaiting the batch std
  std::vector<double> row_likelihood_;  // ragged groups with token log-probs: computed up front
  std::vector<Moments> moments_;
  std::vector<double> combined_;        // normalize_then_sum: s_i (advantage.h)
};

template <typename Real, typename LogpT, typename MaskT>
void run_typed(const AdvantageArrays& a, const AdvantageOptions& opt, const Grouping& grouping) {
  AdvantageKernel<Real, LogpT, MaskT>(a, opt, grouping).run();
}

template <typename Real, typename LogpT>
void dispatch_mask(const AdvantageArrays& a, const AdvantageOptions& opt, const Grouping& grouping) {
  switch (a.mask_dtype) {
    case DType::kBool:
    case DType::kUInt8: return run_typed<Real, LogpT, uint8_t>(a, opt, grouping);
    default: return run_typed<Real, LogpT, Real>(a, opt, grouping);  // checked: mask dtype == out dtype
  }
}

template <typename Real>
void dispatch_logp(const AdvantageArrays& a, const AdvantageOptions& opt, const Grouping& grouping) {
  if (a.logp_dtype == DType::kFloat64) return dispatch_mask<Real, double>(a, opt, grouping);
  return dispatch_mask<Real, float>(a, opt, grouping);
}

bool is_cpu_float(DType d) { return d == DType::kFloat32 || d == DType::kFloat64; }

}  // namespace

void group_advantages_cpu(const AdvantageArrays& a, const AdvantageOptions& opt) {
  check_advantage_options(opt, a);
  require(is_cpu_float(a.out_dtype), "rewards must be float32 or float64 on the CPU");
  require(a.token_logp == nullptr || is_cpu_float(a.logp_dtype), "token_logp must be float32 or float64 on the CPU");
  // One grouping buffer per calling thread, reused across calls (see grouping.h).
  thread_local Grouping ragged;
  Grouping fixed;
  if (opt.group_size > 0) {
    fixed = fixed_grouping(opt.n_rows, opt.group_size);
  } else {
    grouping_from_ids(a.group_ids, opt.n_rows, ragged);
  }
  const Grouping& grouping = opt.group_size > 0 ? fixed : ragged;
  if (a.out_dtype == DType::kFloat64) return dispatch_logp<double>(a, opt, grouping);
  return dispatch_logp<float>(a, opt, grouping);
}

}  // namespace fk
