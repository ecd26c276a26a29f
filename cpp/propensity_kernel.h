// The CPU kernel body of the propensity contract, included by two translation units:
// propensity.cc (baseline instruction set) and propensity_avx2.cc (compiled with AVX2 + FMA and
// chosen at run time where the processor has them).  Each includer defines
// FK_PROPENSITY_NAMESPACE so that the two copies never share a symbol.  Only the per-chunk pass
// lives here; combining the chunks, validation errors and the final reduction stay in
// propensity.cc, so nothing compiled with AVX2 runs on a processor without it.
#pragma once

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "propensity.h"
#include "propensity_math.h"

#ifndef FK_PROPENSITY_NAMESPACE
#error "define FK_PROPENSITY_NAMESPACE before including propensity_kernel.h"
#endif

namespace fk {
namespace FK_PROPENSITY_NAMESPACE {
namespace {

// exp(-a) for a >= 0 and log1p(e) for e in [0, 1]: the only transcendental functions the row
// formulas need.
struct FloatMath {
  static inline float exp_neg(float a) {
    // Below -87 exp underflows to a denormal; the clamp keeps 2^n a normal float, and the
    // error (< 1e-37 absolute) cannot show in a softplus or a sigmoid.
    const float x = a < 87.0f ? -a : -87.0f;
    const float t = x * 1.44269504088896341f;                 // x / ln 2, <= 0
    const int n = static_cast<int>(t - 0.5f);                 // round(t) for t <= 0
    const float nf = static_cast<float>(n);
    const float r = (x - nf * 0.693145751953125f) - nf * 1.428606765330187e-06f;  // Cody-Waite
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = (n + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
  }
  static inline float log1p_unit(float e) {
    // log1p(e) = 2 atanh(t), t = e / (2 + e) in [0, 1/3]: accurate for tiny e as well.
    const float t = e / (2.0f + e);
    const float t2 = t * t;
    float p = 1.0f / 13.0f;
    p = p * t2 + 1.0f / 11.0f;
    p = p * t2 + 1.0f / 9.0f;
    p = p * t2 + 1.0f / 7.0f;
    p = p * t2 + 1.0f / 5.0f;
    p = p * t2 + 1.0f / 3.0f;
    p = p * t2 + 1.0f;
    return 2.0f * t * p;
  }
};

struct DoubleMath {
  static inline double exp_neg(double a) { return std::exp(-a); }
  static inline double log1p_unit(double e) { return std::log1p(e); }
};

template <typename T>
using MathFor = std::conditional_t<std::is_same_v<T, double>, DoubleMath, FloatMath>;

template <Estimator E, LossKind K, bool Classes, typename T, typename ObsT, bool Pair>
class PropensityKernel {
 public:
  PropensityKernel(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass)
      : opt_(opt),
        c_(row_constants<T>(opt, pass)),
        f_(static_cast<const T*>(a.logits)),
        y_(static_cast<const T*>(a.labels)),
        o_(static_cast<const ObsT*>(a.observed)),
        p_(static_cast<const T*>(a.propensity)),
        h_(static_cast<const T*>(a.imputed)),
        loss_(static_cast<T*>(a.loss)),
        df_(static_cast<T*>(a.grad_logits)),
        dh_(static_cast<T*>(a.grad_imputed)) {}

  void run(ChunkSums* sums) const {
    parallel_chunks(opt_.n_rows, kPropensityChunk, [&](int64_t c, int64_t begin, int64_t end) {
      ChunkSums s;
      for (int64_t b = begin; b < end; b += kBlock) block(b, b + kBlock < end ? b + kBlock : end, s);
      sums[c] = s;
    });
  }

 private:
  static constexpr T kMax = std::numeric_limits<T>::max();

  static inline bool finite(T x) { return (x < T(0) ? -x : x) <= kMax; }  // false for NaN, inf

  static inline bool valid_observed(ObsT o) {
    if constexpr (std::is_same_v<ObsT, uint8_t>) {
      return o <= 1;
    } else {
      return o == ObsT(0) || o == ObsT(1);
    }
  }

  // Rows are processed in blocks: a branch-free loop (vectorised) computes the row results into
  // small stack buffers, then plain loops store what the call asked for.
  static constexpr int64_t kBlock = 256;

  void block(int64_t begin, int64_t end, ChunkSums& s) const {
    T term[kBlock], d_logit[kBlock], d_impute[kBlock], class1[kBlock];
    const bool clamp_rows = opt_.reduction == Reduction::kNone && opt_.nonnegative == NonNegative::kTotal;
    const int64_t m = end - begin;
    const T* f = f_ + (Pair ? 2 * begin : begin);
    const T* h = h_ != nullptr ? h_ + (Pair ? 2 * begin : begin) : nullptr;
    const T* y = y_ + begin;
    const ObsT* o = o_ + begin;
    const T* p = p_ != nullptr ? p_ + begin : nullptr;
    T norm[kBlock];
    int bad_f = 0, bad_y = 0, bad_o = 0, bad_p = 0, bad_h = 0;
    // Local copies: with the constants read through `this` GCC does not vectorise the loop.
    const RowConstants<T> c = c_;
    const T prescale = c_.grad_prescale;
    for (int64_t k = 0; k < m; ++k) {
      T z, hk = T(0), pk = T(1);
      if constexpr (Pair) {
        z = f[2 * k] - f[2 * k + 1];
        bad_f += !finite(f[2 * k]) + !finite(f[2 * k + 1]);
      } else {
        z = f[k];
      }
      bad_f += !finite(z);
      if constexpr (estimator_uses_imputed(E)) {
        if constexpr (Pair) {
          hk = h[2 * k] - h[2 * k + 1];
          bad_h += !finite(h[2 * k]) + !finite(h[2 * k + 1]);
        } else {
          hk = h[k];
        }
        bad_h += !finite(hk);
      }
      const T yk = y[k];
      bad_y += !(yk >= T(0)) + !(yk <= T(1));
      bad_o += !valid_observed(o[k]);
      if constexpr (estimator_uses_propensity(E)) {
        pk = p[k];
        bad_p += !(pk > T(0)) + !(pk <= T(1));
      }
      const RowResult<T> r = propensity_row<E, K, Classes, T, MathFor<T>>(z, yk, static_cast<T>(o[k]), pk, hk, c);
      const bool clamp = clamp_rows & (r.term < T(0));
      term[k] = clamp ? T(0) : r.term;
      if constexpr (Classes) class1[k] = r.class1;
      d_logit[k] = clamp ? T(0) : r.d_logit * prescale;
      d_impute[k] = clamp ? T(0) : r.d_impute * prescale;
      norm[k] = r.norm;
    }
    s.term += lane_sum(term, m);  // not finite when a row term overflowed T (checked on the total)
    s.norm += lane_sum(norm, m);
    if constexpr (Classes) s.class1 += lane_sum(class1, m);
    // Finite inputs, non-finite derivative: the weight overflowed T.  Counted while storing: the
    // same test inside the row loop above stops GCC from vectorising it (10x slower).
    int bad_grad = 0;
    if (opt_.want_grad) {
      bad_grad = store_grad(d_logit, df_, begin, m);
      if constexpr (estimator_uses_imputed(E)) bad_grad += store_grad(d_impute, dh_, begin, m);
    }
    s.invalid |= (bad_f ? kBadLogits : 0) | (bad_y ? kBadLabels : 0) | (bad_o ? kBadObserved : 0) |
                 (bad_p ? kBadPropensity : 0) | (bad_h ? kBadImputed : 0) |
                 (bad_grad ? kOverflow : 0);
    if (opt_.reduction == Reduction::kNone) std::memcpy(loss_ + begin, term, m * sizeof(T));
  }

  // Sum in double over 8 fixed lanes (vectorisable without reassociating anything).
  static double lane_sum(const T* x, int64_t m) {
    constexpr int kLanes = 8;
    double lanes[kLanes] = {};
    int64_t k = 0;
    for (; k + kLanes <= m; k += kLanes) {
      for (int j = 0; j < kLanes; ++j) lanes[j] += static_cast<double>(x[k + j]);
    }
    for (int j = 0; k < m; ++k, ++j) lanes[j] += static_cast<double>(x[k]);
    double total = 0.0;
    for (int j = 0; j < kLanes; ++j) total += lanes[j];
    return total;
  }

  // d/d(first) = dr/dz, d/d(second) = -dr/dz for pairs.  Returns how many were not finite.
  static int store_grad(const T* d, T* out, int64_t begin, int64_t m) {
    int bad = 0;
    if constexpr (Pair) {
      T* o = out + 2 * begin;
      for (int64_t k = 0; k < m; ++k) {
        o[2 * k] = d[k];
        o[2 * k + 1] = -d[k];
        bad += !finite(d[k]);
      }
    } else {
      T* o = out + begin;
      for (int64_t k = 0; k < m; ++k) {
        o[k] = d[k];
        bad += !finite(d[k]);
      }
    }
    return bad;
  }

  PropensityOptions opt_;
  RowConstants<T> c_;
  const T* f_;
  const T* y_;
  const ObsT* o_;
  const T* p_;
  const T* h_;
  T* loss_;
  T* df_;
  T* dh_;
};

// The sum of the clipped weights per chunk (into ChunkSums::norm): sndr needs it before its
// rows.  Contents are validated by the main pass; invalid ones only make this sum meaningless.
// Blocks of weights into a stack buffer, then the fixed-lane sum: both loops vectorise.
template <typename T, typename ObsT>
void weight_chunks(const PropensityArrays& a, const PropensityOptions& opt, ChunkSums* sums) {
  constexpr int64_t kBlock = 256;
  const T* p_all = static_cast<const T*>(a.propensity);
  const ObsT* o_all = static_cast<const ObsT*>(a.observed);
  const T p_min = static_cast<T>(opt.p_min);
  parallel_chunks(opt.n_rows, kPropensityChunk, [&](int64_t c, int64_t begin, int64_t end) {
    constexpr int kLanes = 8;
    double lanes[kLanes] = {};
    T w[kBlock];
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t m = b + kBlock < end ? kBlock : end - b;
      const T* p = p_all + b;
      const ObsT* o = o_all + b;
      for (int64_t k = 0; k < m; ++k) w[k] = static_cast<T>(o[k]) / (p[k] > p_min ? p[k] : p_min);
      int64_t k = 0;
      for (; k + kLanes <= m; k += kLanes) {
        for (int j = 0; j < kLanes; ++j) lanes[j] += static_cast<double>(w[k + j]);
      }
      for (int j = 0; k < m; ++k, ++j) lanes[j] += static_cast<double>(w[k]);
    }
    ChunkSums s;
    for (int j = 0; j < kLanes; ++j) s.norm += lanes[j];
    sums[c] = s;
  });
}

template <Estimator E, LossKind K, bool Classes, typename T, typename ObsT>
void dispatch_pair(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass,
                   ChunkSums* sums) {
  if constexpr (K != LossKind::kMse) {  // mse is pointwise (checked with the options)
    if (opt.pairwise) return PropensityKernel<E, K, Classes, T, ObsT, true>(a, opt, pass).run(sums);
  }
  PropensityKernel<E, K, Classes, T, ObsT, false>(a, opt, pass).run(sums);
}

// The class split only where it exists and the call needs it (class-wise rule, diagnostics).
template <Estimator E, LossKind K, typename T, typename ObsT>
void dispatch_classes(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass,
                      ChunkSums* sums) {
  if constexpr (kHasClasses<E, K>) {
    if (propensity_needs_classes(opt, a)) return dispatch_pair<E, K, true, T, ObsT>(a, opt, pass, sums);
  }
  dispatch_pair<E, K, false, T, ObsT>(a, opt, pass, sums);
}

template <Estimator E, LossKind K, typename T>
void dispatch_observed(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass,
                       ChunkSums* sums) {
  if (a.observed_dtype == a.dtype) return dispatch_classes<E, K, T, T>(a, opt, pass, sums);
  dispatch_classes<E, K, T, uint8_t>(a, opt, pass, sums);
}

template <Estimator E, typename T>
void dispatch_loss(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass,
                   ChunkSums* sums) {
  switch (opt.loss) {
    case LossKind::kSurrogate: return dispatch_observed<E, LossKind::kSurrogate, T>(a, opt, pass, sums);
    case LossKind::kForward: return dispatch_observed<E, LossKind::kForward, T>(a, opt, pass, sums);
    case LossKind::kMse: return dispatch_observed<E, LossKind::kMse, T>(a, opt, pass, sums);
  }
}

template <typename T>
void dispatch_estimator(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass,
                        ChunkSums* sums) {
  switch (opt.estimator) {
#define FK_CASE(e) \
  case Estimator::e: return dispatch_loss<Estimator::e, T>(a, opt, pass, sums);
    FK_CASE(kNaive) FK_CASE(kIps) FK_CASE(kSnips) FK_CASE(kDr) FK_CASE(kSndr) FK_CASE(kSwitchDr) FK_CASE(kDros)
    FK_CASE(kSgIps) FK_CASE(kSgDr) FK_CASE(kDrJl) FK_CASE(kMrdr)
#undef FK_CASE
  }
}

}  // namespace

// Fills sums[c] for every chunk c of kPropensityChunk rows, and the requested per-row outputs.
void propensity_chunks(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass,
                       ChunkSums* sums) {
  if (a.dtype == DType::kFloat64) return dispatch_estimator<double>(a, opt, pass, sums);
  dispatch_estimator<float>(a, opt, pass, sums);
}

// Fills sums[c].norm with the sum of the clipped weights o / max(p, p_min) of chunk c.
void propensity_weight_chunks(const PropensityArrays& a, const PropensityOptions& opt, ChunkSums* sums) {
  const bool same = a.observed_dtype == a.dtype;
  if (a.dtype == DType::kFloat64) {
    return same ? weight_chunks<double, double>(a, opt, sums) : weight_chunks<double, uint8_t>(a, opt, sums);
  }
  same ? weight_chunks<float, float>(a, opt, sums) : weight_chunks<float, uint8_t>(a, opt, sums);
}

}  // namespace FK_PROPENSITY_NAMESPACE
}  // namespace fk
