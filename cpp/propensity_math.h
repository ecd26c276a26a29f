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
};

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

// The whole per-row computation for estimator E.  o is 0 or 1, w already clipped.
template <Estimator E, typename R, typename Math>
FK_HD RowResult<R> propensity_row(R z, R y, R o, R p, R h, const RowConstants<R>& c) {
  const Softplus<R> sp = softplus_pair<R, Math>(z);
  // l~ = ((y - rho10) l1 + (1 - y - rho01) l0) / d, and dl~/dz = s - (y - rho10) / d
  const R a1 = (y - c.rho10) * c.inv_d;
  const R a0 = (c.one_m_rho01 - y) * c.inv_d;
  const R surrogate = a1 * sp.l1 + a0 * sp.l0;
  const R d_surrogate = sp.s - a1;
  R w;
  if constexpr (E == Estimator::kNaive) {
    w = o;
  } else {
    w = o / (p > c.p_min ? p : c.p_min);
  }
  RowResult<R> r;
  r.norm = w;
  if constexpr (E == Estimator::kDr) {
    const R q = sigmoid<R, Math>(h);
    const R imputed_loss = q * sp.l1 + (R(1) - q) * sp.l0;
    const R d_imputed_loss = sp.s - q;
    r.term = imputed_loss + w * (surrogate - imputed_loss);
    r.d_logit = d_imputed_loss + w * (d_surrogate - d_imputed_loss);
    // d e / d q = l1 - l0 = -z, and d q / d h = q (1 - q)
    r.d_impute = (R(1) - w) * (-z) * q * (R(1) - q);
  } else {
    r.term = w * surrogate;
    r.d_logit = w * d_surrogate;
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
