// Per-row formulas of the propensity contract (propensity.h), shared by the CPU kernel and the
// CUDA kernel so that both compute the same thing.  Header-only, no Python, no std library
// calls that nvcc cannot compile for the device: the math functions come from a policy type.
#pragma once

#include "propensity.h"

#if defined(__CUDACC__)
#define FK_HD __host__ __device__ __forceinline__
#else
// static: each translation unit (baseline and AVX2 builds) keeps its own copy.
#define FK_HD static inline
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
};

// The constants of one call from its options (self_norm: see propensity_self_norm).
template <typename R>
FK_HD RowConstants<R> row_constants(const PropensityOptions& opt, double self_norm) {
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
  c.self_norm = static_cast<R>(self_norm);
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
  R d_impute;  // dr_i / dh_i (dr only)
  R norm;      // contribution to Z for naive (o_i) and snips (w_i)
};

// softplus(z) = max(z, 0) + log1p(exp(-|z|)) and softplus(-z) = max(-z, 0) + log1p(exp(-|z|)),
// sigmoid(z) from the same exp(-|z|): no overflow for any finite z.
template <typename R>
struct Softplus {
  R l1;  // softplus(-z): loss when the label is 1
  R l0;  // softplus(z): loss when the label is 0
  R s;   // sigmoid(z)
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

// The whole per-row computation for estimator E.  o is 0 or 1.
template <Estimator E, typename R, typename Math>
FK_HD RowResult<R> propensity_row(R z, R y, R o, R p, R h, const RowConstants<R>& c) {
  const Softplus<R> sp = softplus_pair<R, Math>(z);
  // l~ = ((y - rho10) l1 + (1 - y - rho01) l0) / d, and dl~/dz = s - (y - rho10) / d
  const R a1 = (y - c.rho10) * c.inv_d;
  const R a0 = (c.one_m_rho01 - y) * c.inv_d;
  const R surrogate = a1 * sp.l1 + a0 * sp.l0;
  const R d_surrogate = sp.s - a1;
  const R w = clipped_weight<E, R>(o, p, c);
  RowResult<R> r;
  r.norm = w;
  if constexpr (kDoublyRobust<E> || kImputationObjective<E>) {
    const R q = sigmoid<R, Math>(h);
    const R imputed_loss = q * sp.l1 + (R(1) - q) * sp.l0;
    const R d_imputed_loss = sp.s - q;
    // d e / d q = l1 - l0 = -z, and d q / d h = q (1 - q)
    const R d_imputed_dh = -z * q * (R(1) - q);
    if constexpr (kDoublyRobust<E>) {
      const R v = transformed_weight<E, R>(w, c);
      r.term = imputed_loss + v * (surrogate - imputed_loss);
      r.d_logit = d_imputed_loss + v * (d_surrogate - d_imputed_loss);
      r.d_impute = (R(1) - v) * d_imputed_dh;
    } else {
      // dr_jl: m = w;  mrdr: m = o (1 - pc) / pc^2 = w^2 (1 - pc), pc = max(p, p_min)
      R m = w;
      if constexpr (E == Estimator::kMrdr) m = w * w * (R(1) - (p > c.p_min ? p : c.p_min));
      const R diff = surrogate - imputed_loss;
      const R two_m_diff = R(2) * m * diff;
      r.term = m * diff * diff;
      r.d_logit = two_m_diff * (d_surrogate - d_imputed_loss);
      r.d_impute = -two_m_diff * d_imputed_dh;
    }
  } else {
    const R v = transformed_weight<E, R>(w, c);
    r.term = v * surrogate;
    r.d_logit = v * d_surrogate;
    r.d_impute = R(0);
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

// Reduced loss and grad_scale from the sums (mean / sum reductions).
struct Reduced {
  double loss;
  double grad_scale;
};

FK_HD Reduced propensity_reduce(const PropensityOptions& opt, double sum_term, double sum_norm) {
  Reduced out{sum_term, 1.0};
  if (opt.reduction == Reduction::kMean) {
    const double z = propensity_normaliser(opt.estimator, opt.n_rows, sum_norm);
    // Z = 0 (empty input, or no observed row for naive/snips): loss 0, gradient 0.
    out.loss = z > 0.0 ? sum_term / z : 0.0;
    out.grad_scale = z > 0.0 ? 1.0 / z : 0.0;
  }
  if (opt.nonnegative && out.loss < 0.0) {
    out.loss = 0.0;
    out.grad_scale = 0.0;
  }
  return out;
}

}  // namespace fk
