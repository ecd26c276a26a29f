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

#include "grouping.h"

namespace fk {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

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
inline void broadcast_row(Real advantage, const MaskT* mask, Real* out, int64_t n_tokens) {
  if constexpr (std::is_same_v<MaskT, uint8_t>) {
    for (int64_t t = 0; t < n_tokens; ++t) out[t] = mask[t] ? advantage : Real(0);
  } else {
    for (int64_t t = 0; t < n_tokens; ++t) out[t] = advantage * mask[t];
  }
}

// ----------------------------------------------------------------------------------------
// Ranks within one group: 0 = least likely.  Counting for small groups, sorting for large;
// both give the same numbers ("first": ties broken by position, i.e. by row index).

void ranks_in_group(const std::vector<double>& likelihood, bool average, std::vector<double>& rank,
                    std::vector<int64_t>& order) {
  const int64_t m = static_cast<int64_t>(likelihood.size());
  rank.resize(m);
  if (m <= 64) {
    for (int64_t j = 0; j < m; ++j) {
      int64_t less = 0, equal_before = 0, equal = 0;
      for (int64_t k = 0; k < m; ++k) {
        less += likelihood[k] < likelihood[j];
        equal += likelihood[k] == likelihood[j];
        equal_before += k < j && likelihood[k] == likelihood[j];
      }
      rank[j] = average ? less + 0.5 * static_cast<double>(equal - 1) : static_cast<double>(less + equal_before);
    }
    return;
  }
  order.resize(m);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return likelihood[a] < likelihood[b]; });
  for (int64_t begin = 0; begin < m;) {
    int64_t end = begin + 1;
    while (end < m && likelihood[order[end]] == likelihood[order[begin]]) ++end;
    for (int64_t k = begin; k < end; ++k) {
      rank[order[k]] = average ? 0.5 * static_cast<double>(begin + end - 1) : static_cast<double>(k);
    }
    begin = end;
  }
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

template <typename Real, typename LogpT, typename MaskT>
class AdvantageKernel {
 public:
  AdvantageKernel(const AdvantageArrays& a, const AdvantageOptions& opt, const Grouping& grouping)
      : opt_(opt),
        grouping_(grouping),
        rewards_(static_cast<const Real*>(a.rewards)),
        seq_logp_(static_cast<const Real*>(a.seq_logp)),
        token_logp_(static_cast<const LogpT*>(a.token_logp)),
        mask_(static_cast<const MaskT*>(a.mask)),
        out_(static_cast<Real*>(a.out)),
        row_has_signal_(a.row_has_signal) {}

  void run() {
    const int64_t n_groups = grouping_.n_groups;
    const bool batch_scale = opt_.scale == Scale::kBatch;
    if (batch_scale) {
      centered_.assign(opt_.n_rows, 0.0);
      moments_.assign(n_groups, Moments{});
    }
    const int64_t rows_per_group = std::max<int64_t>(1, opt_.n_rows / std::max<int64_t>(1, n_groups));
    const int64_t cost_per_row = 1 + opt_.n_tokens / 64;
    const int64_t chunk = std::max<int64_t>(1, 8192 / (rows_per_group * cost_per_row));
    parallel_chunks(n_groups, chunk, [&](int64_t, int64_t begin, int64_t end) {
      Scratch scratch;
      for (int64_t g = begin; g < end; ++g) process_group(g, scratch);
    });
    if (!batch_scale) return;
    const Moments batch = combine(moments_);
    const double divisor = std_from(batch.m2, batch.count, opt_.unbiased) + opt_.eps;
    parallel_chunks(opt_.n_rows, std::max<int64_t>(1, 65536 / cost_per_row), [&](int64_t, int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) write_row(row, centered_[row] / divisor);
    });
  }

 private:
  struct Scratch {
    std::vector<int64_t> rows;      // rows of the group that carry a reward
    std::vector<double> reward;     // their (reweighted) rewards
    std::vector<double> likelihood;
    std::vector<double> rank;
    std::vector<int64_t> order;
  };

  double likelihood_of(int64_t row) const {
    if (opt_.likelihood == Likelihood::kSequence) return static_cast<double>(seq_logp_[row]);
    return row_likelihood(token_logp_ + row * opt_.logp_row_stride, mask_ + row * opt_.mask_row_stride,
                          opt_.n_tokens, opt_.likelihood == Likelihood::kTokenMean);
  }

  void write_row(int64_t row, double advantage) const {
    const Real a = static_cast<Real>(advantage);
    if (mask_ == nullptr) {
      out_[row] = a;
    } else {
      broadcast_row(a, mask_ + row * opt_.mask_row_stride, out_ + row * opt_.out_row_stride, opt_.n_tokens);
    }
  }

  // Rows without a reward, and every row of a group with nothing to compare, get 0.
  void write_group_zero(int64_t g) const {
    for (int64_t j = 0; j < grouping_.size(g); ++j) write_row(grouping_.row(g, j), 0.0);
  }

  void process_group(int64_t g, Scratch& s) {
    const int64_t size = grouping_.size(g);
    s.rows.clear();
    s.reward.clear();
    for (int64_t j = 0; j < size; ++j) {
      const int64_t row = grouping_.row(g, j);
      const double r = static_cast<double>(rewards_[row]);
      if (std::isnan(r)) {
        if (opt_.scale != Scale::kBatch) write_row(row, 0.0);  // batch: centered_ is already 0
        continue;
      }
      s.rows.push_back(row);
      s.reward.push_back(r);
    }
    const int64_t m = static_cast<int64_t>(s.rows.size());
    if (row_has_signal_ != nullptr) {
      bool signal = false;
      for (int64_t j = 1; j < m; ++j) signal |= s.reward[j] != s.reward[0];
      for (int64_t j = 0; j < size; ++j) row_has_signal_[grouping_.row(g, j)] = signal;
    }
    if (m == 0) return;
    const bool poisoned = opt_.uses_ranks() && reweight_by_rank(s);

    double sum = 0.0;
    for (double r : s.reward) sum += r;
    const double mean = sum / static_cast<double>(m);
    double m2 = 0.0;
    for (double r : s.reward) m2 += (r - mean) * (r - mean);
    // A poisoned group stays out of the batch std: its advantages are NaN anyway.
    if (opt_.scale == Scale::kBatch && !poisoned) moments_[g] = Moments{m, mean, m2};

    // Singletons: "zero" gives 0; "raw" (verl) takes baseline 0 and a group std of 1.
    const bool singleton = m == 1;
    const double group_std = singleton ? 1.0 : std_from(m2, m, opt_.unbiased);
    for (int64_t j = 0; j < m; ++j) {
      double centered;
      if (singleton) {
        centered = opt_.singleton_raw ? s.reward[j] : 0.0;
      } else if (opt_.baseline_loo) {
        centered = s.reward[j] - (sum - s.reward[j]) / static_cast<double>(m - 1);
      } else {
        centered = s.reward[j] - mean;
      }
      if (poisoned) centered = kNaN;
      switch (opt_.scale) {
        case Scale::kBatch: centered_[s.rows[j]] = centered; break;
        case Scale::kGroup: write_row(s.rows[j], centered / (group_std + opt_.eps)); break;
        case Scale::kNone: write_row(s.rows[j], centered); break;
      }
    }
  }

  // r' = r * (1 - beta * rank / m).  Returns true when a likelihood is NaN (group poisoned).
  bool reweight_by_rank(Scratch& s) const {
    const int64_t m = static_cast<int64_t>(s.rows.size());
    s.likelihood.resize(m);
    bool any_nan = false;
    for (int64_t j = 0; j < m; ++j) {
      s.likelihood[j] = likelihood_of(s.rows[j]);
      any_nan |= std::isnan(s.likelihood[j]);
    }
    if (any_nan) return true;
    ranks_in_group(s.likelihood, opt_.ties_average, s.rank, s.order);
    for (int64_t j = 0; j < m; ++j) s.reward[j] *= 1.0 - opt_.beta_rank * s.rank[j] / static_cast<double>(m);
    return false;
  }

  const AdvantageOptions& opt_;
  const Grouping& grouping_;
  const Real* rewards_;
  const Real* seq_logp_;
  const LogpT* token_logp_;
  const MaskT* mask_;
  Real* out_;
  bool* row_has_signal_;
  std::vector<double> centered_;  // scale == "batch" only: numerators awaiting the batch std
  std::vector<Moments> moments_;
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
  const Grouping grouping = opt.group_size > 0 ? fixed_grouping(opt.n_rows, opt.group_size)
                                               : grouping_from_ids(a.group_ids, opt.n_rows);
  if (a.out_dtype == DType::kFloat64) return dispatch_logp<double>(a, opt, grouping);
  return dispatch_logp<float>(a, opt, grouping);
}

}  // namespace fk
