// Per-row formulas of the propensity contract (propensity.h), shared by the CPU kernel and the
// CUDA kernel so that both compute the same thing.  Header-only, no Python, no std library
// calls that nvcc cannot compile for the device: the math functions come from a policy type.
#pragma once

#include <cmath>

#include "propensity.h"

#if defined(__CUDACC__)
#define FK_HD __host__ __device__ __forceinline__
#else
// static: each translation unit (baseline and AVX2 builds) keeps its own copy.  Always
// inlined: a call left in the row loop stops it from vectorising (GCC's inliner gives up on
// softplus_pair once the row function grows, ~10x slower).
#if defined(__GNUC__)
#define FK_HD static inline __attribute__((always_inline))
#else
#define FK_HD static inline
#endif
#endif

namespace fk {

// Constants of one call, in the compute type R (float for float/half/bf16 data, double for
// double).
template <typename R>
struct RowConstants {
  R rho10;
  R inv_d;        // 1 / (1 - rho10 - rho01)
  R one_m_rho01;  // 1 - rho01
  R p_min;
  R grad_prescale;  // multiplies the derivatives written by the kernel
  R tau;            // switch_dr threshold (may be inf)
  R shrink_num;     // dros: v = shrink_num w / (shrink_sq w^2 + shrink_num): (lambda, 1), or (1, 0) for inf
  R shrink_sq;
  R sg_lambda;      // sg_*: v = w / (sg_one_m_lambda + sg_lambda w)
  R sg_one_m_lambda;
  R self_norm;      // sndr: N / sum_j w_j (0 when the sum is 0), found by a pass before the rows
  R factor1;        // classwise: the gradient factors of R_1 and R_0 (1, or -gamma: nnPU's rule)
  R factor0;
  // forward correction: q = (1 - rho01) s + rho10 (1 - s); logs of the four rates (-inf for 0)
  R rho01;
  R one_m_rho10;
  R d;              // 1 - rho10 - rho01
  R log_1m_rho01;
  R log_rho10;
  R log_rho01;
  R log_1m_rho10;
};

// The constants of one pass from the call's options and the pass's scalars.
template <typename R>
FK_HD RowConstants<R> row_constants(const PropensityOptions& opt, const PassScalars& pass) {
  const double d = 1.0 - opt.rho10 - opt.rho01;
  const bool shrink_inf = !(opt.lambda_ - opt.lambda_ == 0.0);  // lambda_ = inf: dros is dr
  RowConstants<R> c;
  c.rho10 = static_cast<R>(opt.rho10);
  c.inv_d = static_cast<R>(1.0 / d);
  c.one_m_rho01 = static_cast<R>(1.0 - opt.rho01);
  c.p_min = static_cast<R>(opt.p_min);
  c.grad_prescale = static_cast<R>(opt.grad_prescale);
  c.tau = static_cast<R>(opt.tau);
  c.shrink_num = shrink_inf ? R(1) : static_cast<R>(opt.lambda_);
  c.shrink_sq = shrink_inf ? R(0) : R(1);
  c.sg_lambda = static_cast<R>(opt.lambda_);
  c.sg_one_m_lambda = static_cast<R>(1.0 - opt.lambda_);
  c.self_norm = static_cast<R>(pass.self_norm);
  c.factor1 = static_cast<R>(pass.factor1);
  c.factor0 = static_cast<R>(pass.factor0);
  c.rho01 = static_cast<R>(opt.rho01);
  c.one_m_rho10 = static_cast<R>(1.0 - opt.rho10);
  c.d = static_cast<R>(d);
  c.log_1m_rho01 = static_cast<R>(log(1.0 - opt.rho01));
  c.log_rho10 = static_cast<R>(log(opt.rho10));
  c.log_rho01 = static_cast<R>(log(opt.rho01));
  c.log_1m_rho10 = static_cast<R>(log(1.0 - opt.rho10));
  return c;
}

// sndr's factor N / sum w (0 when no row is observed: the estimator is then the imputation).
FK_HD double propensity_self_norm(int64_t n_rows, double sum_weights) {
  return sum_weights > 0.0 ? static_cast<double>(n_rows) / sum_weights : 0.0;
}

template <typename R>
struct RowResult {
  R term;      // r_i
  R d_logit;   // dr_i / dz_i
  R d_impute;  // dr_i / dh_i (the estimators that read h)
  R norm;      // contribution to Z for naive (o_i) and snips (w_i)
  R class1;    // the part of r_i in l(z, 1) (backward-corrected losses; R_1 sums it), else 0
};

// A row loss L(z, t) of the (possibly soft) label t and its derivatives: the weighting
// combines the loss against the noisy label (L) and against the imputed label (e).
template <typename R>
struct LossPair {
  R value;  // L(z, t)
  R d_z;    // dL/dz
  R d_t;    // dL/dt (for the imputation's gradient, times dt/dh)
};

// softplus(z) = max(z, 0) + log1p(exp(-|z|)) and softplus(-z) = max(-z, 0) + log1p(exp(-|z|)),
// sigmoid(z) from the same exp(-|z|): no overflow for any finite z.
template <typename R>
struct Softplus {
  R l1;  // softplus(-z): loss when the label is 1
  R l0;  // softplus(z): loss when the label is 0
  R s;   // sigmoid(z)
  R sc;  // 1 - sigmoid(z) = sigmoid(-z), without cancellation
};

template <typename R, typename Math>
FK_HD Softplus<R> softplus_pair(R z) {
  const R a = z < R(0) ? -z : z;
  const R e = Math::exp_neg(a);
  const R lp = Math::log1p_unit(e);
  const R inv = R(1) / (R(1) + e);
  Softplus<R> out;
  out.l0 = (z > R(0) ? z : R(0)) + lp;
  out.l1 = (z < R(0) ? -z : R(0)) + lp;
  out.s = z >= R(0) ? inv : e * inv;
  out.sc = z >= R(0) ? e * inv : inv;
  return out;
}

template <typename R, typename Math>
FK_HD R sigmoid(R h) {
  const R e = Math::exp_neg(h < R(0) ? -h : h);
  const R inv = R(1) / (R(1) + e);
  return h >= R(0) ? inv : e * inv;
}

// The clipped weight w = o / max(p, p_min) (naive: o).
template <Estimator E, typename R>
FK_HD R clipped_weight(R o, R p, const RowConstants<R>& c) {
  if constexpr (E == Estimator::kNaive) {
    return o;
  } else {
    return o / (p > c.p_min ? p : c.p_min);
  }
}

// The weight v the estimator uses in place of w (propensity.h).  Each transform maps 0 to 0, so
// unobserved rows never weigh; the guards give 0 where the formula would be 0 / 0 (w = 0 with
// lambda = 0 for dros, or lambda = 1 for sg).
template <Estimator E, typename R>
FK_HD R transformed_weight(R w, const RowConstants<R>& c) {
  if constexpr (E == Estimator::kSndr) {
    return w * c.self_norm;
  } else if constexpr (E == Estimator::kSwitchDr) {
    return w <= c.tau ? w : R(0);
  } else if constexpr (E == Estimator::kDros) {
    const R den = c.shrink_sq * (w * w) + c.shrink_num;
    return den > R(0) ? c.shrink_num * w / den : R(0);
  } else if constexpr (E == Estimator::kSgIps || E == Estimator::kSgDr) {
    const R den = c.sg_one_m_lambda + c.sg_lambda * w;
    return den > R(0) ? w / den : R(0);
  } else {
    return w;
  }
}

template <Estimator E>
constexpr bool kDoublyRobust = E == Estimator::kDr || E == Estimator::kSndr || E == Estimator::kSwitchDr ||
                               E == Estimator::kDros || E == Estimator::kSgDr;
template <Estimator E>
constexpr bool kImputationObjective = E == Estimator::kDrJl || E == Estimator::kMrdr;
// Whether the class split R_1 + R_0 exists: backward-corrected risks (not the objectives).
template <Estimator E, LossKind K>
constexpr bool kHasClasses = K == LossKind::kSurrogate && !kImputationObjective<E>;

// log(exp(a) + exp(b)) for a, b <= 0 (b may be -inf): a stable log of a sum of probabilities.
template <typename R, typename Math>
FK_HD R log_add(R a, R b) {
  const R hi = a > b ? a : b;
  const R gap = a > b ? a - b : b - a;
  return hi + Math::log1p_unit(Math::exp_neg(gap));
}

// The row losses of the non-linear kinds (propensity.h, LossKind) against a label t in [0, 1].
// Forward (Patrini et al. 2017): BCE of t against q = (1 - rho01) s + rho10 (1 - s), in log
// space (log s = -l1, log(1 - s) = -l0), dq/dz = d s (1 - s), and s (1 - s) / q written as
// 1 / ((1 - rho01) / (1 - s) + rho10 / s) so that no 0 / 0 appears where s or 1 - s underflows.
// Mse: (s - t)^2.
template <LossKind K, typename R, typename Math>
FK_HD LossPair<R> kind_loss(const Softplus<R>& sp, R t, const RowConstants<R>& c) {
  LossPair<R> out;
  if constexpr (K == LossKind::kForward) {
    const R tiny = R(1.2e-38);  // just above the smallest normal float: the sums below stay finite
    const R s = sp.s > tiny ? sp.s : tiny;
    const R sc = sp.sc > tiny ? sp.sc : tiny;
    const R nlq = -log_add<R, Math>(c.log_1m_rho01 - sp.l1, c.log_rho10 - sp.l0);   // -log q
    const R nlnq = -log_add<R, Math>(c.log_rho01 - sp.l1, c.log_1m_rho10 - sp.l0);  // -log(1 - q)
    const R g1 = R(1) / (c.one_m_rho01 / sc + c.rho10 / s);  // s (1 - s) / q
    const R g0 = R(1) / (c.rho01 / sc + c.one_m_rho10 / s);  // s (1 - s) / (1 - q)
    out.value = t * nlq + (R(1) - t) * nlnq;
    out.d_z = c.d * ((R(1) - t) * g0 - t * g1);
    out.d_t = nlq - nlnq;
  } else {
    const R diff = sp.s - t;
    out.value = diff * diff;
    out.d_z = R(2) * diff * sp.s * sp.sc;
    out.d_t = R(-2) * diff;
  }
  return out;
}

// The whole per-row computation for estimator E and loss kind K.  o is 0 or 1.
//
// Backward-corrected kinds (kSurrogate) also give the row's class split: the row term is
// C1 l1 + C0 l0 with per-row coefficients (the ips family: C = v a; the dr family and the
// imputed loss e = q l1 + (1 - q) l0: C1 = (1 - v) q + v a1, C0 = (1 - v) (1 - q) + v a0), so
// the class-wise risk R_c sums C_c l_c and its gradient factor (factor1, factor0: 1 unless the
// class-wise rule flips a class) multiplies that class's derivative only.  The term itself
// keeps the difference form e + v (l~ - e), which stays exact where l~ = e under a huge weight.
// Classes: also compute the class split and apply the class factors (a template flag: the
// extra work slows the plain loss by up to 1.7x on the CPU, so only calls that need it, with
// nonnegative "classwise" or diagnostics, pay for it).
template <Estimator E, LossKind K, bool Classes, typename R, typename Math>
FK_HD RowResult<R> propensity_row(R z, R y, R o, R p, R h, const RowConstants<R>& c) {
  const Softplus<R> sp = softplus_pair<R, Math>(z);
  const R w = clipped_weight<E, R>(o, p, c);
  RowResult<R> r;
  r.norm = w;
  r.class1 = R(0);
  constexpr bool kImputed = kDoublyRobust<E> || kImputationObjective<E>;
  R q = R(0), dq_dh = R(0);
  if constexpr (kImputed) {
    q = sigmoid<R, Math>(h);
    dq_dh = q * (R(1) - q);
  }
  if constexpr (K == LossKind::kSurrogate && !kImputationObjective<E>) {
    // l~ = a1 l1 + a0 l0, a1 = (y - rho10) / d, a0 = (1 - y - rho01) / d; dl~/dz = s - a1
    const R a1 = (y - c.rho10) * c.inv_d;
    const R a0 = (c.one_m_rho01 - y) * c.inv_d;
    const R surrogate = a1 * sp.l1 + a0 * sp.l0;
    const R d_surrogate = sp.s - a1;
    const R v = transformed_weight<E, R>(w, c);
    if constexpr (kDoublyRobust<E>) {
      // The difference form e + v (l~ - e): exact where l~ = e whatever the weight.
      const R imputed_loss = q * sp.l1 + (R(1) - q) * sp.l0;
      const R d_imputed_loss = sp.s - q;
      r.term = imputed_loss + v * (surrogate - imputed_loss);
      r.d_logit = d_imputed_loss + v * (d_surrogate - d_imputed_loss);
      // d e / d q = l1 - l0 = -z
      r.d_impute = (R(1) - v) * (-z) * dq_dh;
    } else {
      r.term = v * surrogate;
      r.d_logit = v * d_surrogate;
      r.d_impute = R(0);
    }
    if constexpr (Classes) {
      R c1 = v * a1, c0 = v * a0;
      if constexpr (kDoublyRobust<E>) {
        c1 += (R(1) - v) * q;
        c0 += (R(1) - v) * (R(1) - q);
        // a flipped class adds (factor - 1) times its own derivative (0 when unflipped)
        r.d_impute += (R(1) - v) * dq_dh * ((c.factor1 - R(1)) * sp.l1 - (c.factor0 - R(1)) * sp.l0);
      }
      r.class1 = c1 * sp.l1;
      // Class-wise rule: d R_c / dz = C1 (s - 1) for class 1, C0 s for class 0.
      r.d_logit += (c.factor0 - R(1)) * c0 * sp.s - (c.factor1 - R(1)) * c1 * sp.sc;
    }
  } else {
    // The row loss L against the noisy label and, where h is read, e against sigmoid(h).
    LossPair<R> loss, imputed;
    if constexpr (K == LossKind::kSurrogate) {
      const R a1 = (y - c.rho10) * c.inv_d;
      const R a0 = (c.one_m_rho01 - y) * c.inv_d;
      loss = LossPair<R>{a1 * sp.l1 + a0 * sp.l0, sp.s - a1, R(0)};
      imputed = LossPair<R>{q * sp.l1 + (R(1) - q) * sp.l0, sp.s - q, sp.l1 - sp.l0};
    } else {
      loss = kind_loss<K, R, Math>(sp, y, c);
      if constexpr (kImputed) imputed = kind_loss<K, R, Math>(sp, q, c);
    }
    if constexpr (kImputationObjective<E>) {
      // dr_jl: m = w;  mrdr: m = o (1 - pc) / pc^2 = w^2 (1 - pc), pc = max(p, p_min)
      R m = w;
      if constexpr (E == Estimator::kMrdr) m = w * w * (R(1) - (p > c.p_min ? p : c.p_min));
      const R diff = loss.value - imputed.value;
      const R two_m_diff = R(2) * m * diff;
      r.term = m * diff * diff;
      r.d_logit = two_m_diff * (loss.d_z - imputed.d_z);
      r.d_impute = -two_m_diff * imputed.d_t * dq_dh;
    } else if constexpr (kDoublyRobust<E>) {
      const R v = transformed_weight<E, R>(w, c);
      r.term = imputed.value + v * (loss.value - imputed.value);
      r.d_logit = imputed.d_z + v * (loss.d_z - imputed.d_z);
      r.d_impute = (R(1) - v) * imputed.d_t * dq_dh;
    } else {
      const R v = transformed_weight<E, R>(w, c);
      r.term = v * loss.value;
      r.d_logit = v * loss.d_z;
      r.d_impute = R(0);
    }
  }
  return r;
}

// Normaliser of the "mean" reduction.
FK_HD double propensity_normaliser(Estimator e, int64_t n_rows, double sum_norm) {
  return (e == Estimator::kNaive || e == Estimator::kSnips) ? sum_norm : static_cast<double>(n_rows);
}

// x - x is 0 for finite x and NaN for +-inf and NaN (no <cmath> needed on either side).
FK_HD bool finite_double(double x) { return x - x == 0.0; }

// Whether the sums overflowed float64 (kOverflow), looking at the sum of weights only where the
// call divides by it ("mean" of naive / snips).
FK_HD bool propensity_sums_overflow(const PropensityOptions& opt, double sum_term, double sum_norm) {
  const bool uses_norm = opt.reduction == Reduction::kMean &&
                         (opt.estimator == Estimator::kNaive || opt.estimator == Estimator::kSnips);
  return !finite_double(sum_term) || (uses_norm && !finite_double(sum_norm));
}

// Reduced loss and grad_scale from the sums (mean / sum reductions), and the class-wise
// gradient factors (1, 1 unless nonnegative is kClasswise and a class risk fell below -beta).
struct Reduced {
  double loss;
  double grad_scale;
  double risk1;  // R_1 and R_0 (kSurrogate losses; the reduced class sums)
  double risk0;
  double factor1;
  double factor0;
};

FK_HD Reduced propensity_reduce(const PropensityOptions& opt, double sum_term, double sum_norm, double sum_class1) {
  double z = 1.0;
  if (opt.reduction == Reduction::kMean) z = propensity_normaliser(opt.estimator, opt.n_rows, sum_norm);
  // Z = 0 (empty input, or no observed row for naive/snips): loss 0, gradient 0.
  const double inv = z > 0.0 ? 1.0 / z : 0.0;
  Reduced out{sum_term * inv, inv, sum_class1 * inv, (sum_term - sum_class1) * inv, 1.0, 1.0};
  if (opt.nonnegative == NonNegative::kClasswise) {
    out.loss = (out.risk1 > 0.0 ? out.risk1 : 0.0) + (out.risk0 > 0.0 ? out.risk0 : 0.0);
    out.factor1 = out.risk1 >= -opt.nn_beta ? 1.0 : -opt.nn_gamma;
    out.factor0 = out.risk0 >= -opt.nn_beta ? 1.0 : -opt.nn_gamma;
  } else if (opt.nonnegative == NonNegative::kTotal && out.loss < 0.0) {
    out.loss = 0.0;
    out.grad_scale = 0.0;
  }
  return out;
}

}  // namespace fk
