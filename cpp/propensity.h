// Propensity-weighted, noise-aware losses (CausalRM and its baselines).
//
// One contract, two compiled implementations: propensity.cc (CPU) and
// ../cuda/propensity.cu (CUDA); the per-row formulas are shared (propensity_math.h).  The numpy
// reference lives in tests/propensity_reference.py.
//
// Per row i, with z_i = f_i (base "bce") or f_i0 - f_i1 (base "bt": first minus second) and
// l1 = softplus(-z) (loss if y = 1), l0 = softplus(z) (loss if y = 0):
//   noise-aware surrogate   l~_i = ((y_i - rho10) l1 + (1 - y_i - rho01) l0) / (1 - rho10 - rho01)
//                           (rho10 = P(noisy 1 | clean 0), rho01 = P(noisy 0 | clean 1); for y in
//                           {0, 1} this is the backward correction of Natarajan et al. 2013)
//   weight                  w_i = o_i / max(p_i, p_min)            ("naive": w_i = o_i)
//   weight transform v_i    ips, snips, dr: w_i;  sg_ips, sg_dr: w_i / (1 - lambda + lambda w_i)
//                           (Metelli et al. 2021);  dros: lambda w_i / (w_i^2 + lambda) (Su et al.
//                           2020; w_i for lambda = inf);  switch_dr: w_i 1{w_i <= tau};
//                           sndr: N w_i / sum_j w_j (0 when no row is observed)
//   row term r_i            naive, ips, snips, sg_ips: v_i l~_i
//                           dr, sndr, switch_dr, dros, sg_dr: e_i + v_i (l~_i - e_i),
//                           e_i = q l1 + (1 - q) l0, q = sigmoid(h_i), h_i the imputation logit
//                           (same layout as f)
//                           dr_jl: w_i (l~_i - e_i)^2;  mrdr: o_i (1 - pc_i) / pc_i^2 (l~_i - e_i)^2,
//                           pc_i = max(p_i, p_min) (imputation-model objectives)
//   normaliser Z            naive: sum o_i;  snips: sum w_i;  every other estimator: N
//   reduction               mean: sum r_i / Z (0 when Z = 0);  sum: sum r_i;  none: r_i per row
//   nonnegative             mean/sum: max(0, loss), gradient 0 when it clamps; none: per row.
// The kernel writes the loss and, on request, the per-row derivatives dr_i/df_i and dr_i/dh_i
// multiplied by grad_prescale (an option: callers pass 1/N where the "mean" normaliser is known
// in advance, so that the common case needs no second pass), plus grad_scale, the factor that
// turns the written values into d loss / d input: (1/Z for "mean", 1 for "sum" and "none",
// 0 when the non-negative clamp is active) / grad_prescale.
#pragma once

#include <cstdint>
#include <limits>

#include "common.h"

namespace fk {

enum class Estimator : int {
  kNaive = 0,
  kIps = 1,
  kSnips = 2,
  kDr = 3,
  kSndr = 4,
  kSwitchDr = 5,
  kDros = 6,
  kSgIps = 7,
  kSgDr = 8,
  kDrJl = 9,
  kMrdr = 10,
};
constexpr int kLastEstimator = 10;

// Which inputs an estimator reads (compile-time, for the kernels' templates).
constexpr bool estimator_uses_imputed(Estimator e) {
  return e == Estimator::kDr || e == Estimator::kSndr || e == Estimator::kSwitchDr || e == Estimator::kDros ||
         e == Estimator::kSgDr || e == Estimator::kDrJl || e == Estimator::kMrdr;
}
constexpr bool estimator_uses_propensity(Estimator e) { return e != Estimator::kNaive; }
enum class Reduction : int { kMean = 0, kSum = 1, kNone = 2 };
// How the row loss is formed (PropensityOptions::loss):
//   kSurrogate: BCE (or Bradley-Terry) with the backward noise correction (the default);
//   kForward:   BCE of the noisy label against q = (1 - rho01) sigmoid(z) + rho10 (1 - sigmoid(z))
//               (forward correction, Patrini et al. 2017); the imputed loss is the same loss
//               against the label sigmoid(h);
//   kMse:       (sigmoid(z) - y)^2 for ratings y in [0, 1] (pointwise, no noise correction).
enum class LossKind : int { kSurrogate = 0, kForward = 1, kMse = 2 };
// How the reduced loss is kept non-negative (PropensityOptions::nonnegative):
//   kOff; kTotal: max(0, loss), gradient 0 when it clamps (per row for "none");
//   kClasswise: max(0, R_1) + max(0, R_0) with nnPU's gradient rule per class (R_c >= -beta:
//   the gradient of R_c, else -gamma times it); kSurrogate losses, mean / sum reductions only.
enum class NonNegative : int { kOff = 0, kTotal = 1, kClasswise = 2 };

struct PropensityOptions {
  int64_t n_rows = 0;
  bool pairwise = false;  // base "bt" with [N, 2] logits; false: one logit per row
  Estimator estimator = Estimator::kIps;
  Reduction reduction = Reduction::kMean;
  double rho10 = 0.0;
  double rho01 = 0.0;
  double p_min = 0.1;
  LossKind loss = LossKind::kSurrogate;
  NonNegative nonnegative = NonNegative::kOff;
  double nn_beta = 0.0;   // classwise: a class's gradient flips when R_c < -nn_beta (>= 0)
  double nn_gamma = 1.0;  // classwise: ... to -nn_gamma times it (>= 0)
  bool want_grad = false;
  double grad_prescale = 1.0;  // multiplies the written derivatives (> 0)
  double tau = std::numeric_limits<double>::infinity();     // switch_dr: rows with w > tau keep the imputation only (>= 0, may be inf)
  double lambda_ = 0.0;        // dros: shrinkage in [0, inf];  sg_ips / sg_dr: in [0, 1]
};

// Contiguous arrays; optional inputs are nullptr.
struct PropensityArrays {
  const void* logits = nullptr;      // [N] or [N, 2], dtype
  const void* labels = nullptr;      // [N], dtype, values in [0, 1]
  const void* observed = nullptr;    // [N], uint8/bool (0/1) or dtype (0.0/1.0)
  const void* propensity = nullptr;  // [N], dtype, (0, 1]; may be nullptr for "naive"
  const void* imputed = nullptr;     // like logits; the estimators of estimator_uses_imputed only
  void* loss = nullptr;              // [1] (mean/sum) or [N] (none), dtype
  void* grad_scale = nullptr;        // [1], dtype; written when want_grad
  void* grad_logits = nullptr;       // like logits; written when want_grad
  void* grad_imputed = nullptr;      // like imputed; written when want_grad and imputed is read
  void* diagnostics = nullptr;       // [kDiagnostics] float64, written when not nullptr (PropensityDiagnostic)
  DType dtype = DType::kFloat32;
  DType observed_dtype = DType::kUInt8;
};

// The diagnostics a call writes on request (PropensityArrays::diagnostics, float64), NaN where
// not defined:
//   kEss            effective sample size of the estimator's weights v: (sum v)^2 / sum v^2
//                   (0 when every v is 0; naive: the number of observed rows);
//   kClippedShare   share of the observed rows whose propensity was raised to p_min (NaN for
//                   naive, which reads no propensity, and without observed rows);
//   kRisk1, kRisk0  R_1 and R_0, the parts of the reduced risk in l(z, 1) and l(z, 0)
//                   (backward-corrected bce / bt risks; "none" reports them as "mean" would;
//                   NaN for the forward correction, mse and the imputation objectives).
enum PropensityDiagnostic : int { kEss = 0, kClippedShare = 1, kRisk1 = 2, kRisk0 = 3, kDiagnostics = 4 };

// Bit flags of invalid array contents, found during the fused pass (no extra read).
enum PropensityInvalid : int {
  kBadLogits = 1,
  kBadLabels = 2,
  kBadObserved = 4,
  kBadPropensity = 8,
  kBadImputed = 16,
  kOverflow = 32,  // valid inputs whose row term (or derivative) or sum overflows the dtype
};

// Scalars of one pass over the rows that the options do not hold: sndr's N / sum w (found by a
// first pass) and the class-wise gradient factors (1, 1 on the first pass; a second pass
// rewrites the gradients when the class-wise rule flips a class).
struct PassScalars {
  double self_norm = 0.0;
  double factor1 = 1.0;
  double factor0 = 1.0;
};

// Whether a call needs the class split R_1 + R_0 of its risk (the class-wise rule, or the
// diagnostics); the kernels compute it only then.
inline bool propensity_needs_classes(const PropensityOptions& opt, const PropensityArrays& a) {
  return opt.nonnegative == NonNegative::kClasswise || a.diagnostics != nullptr;
}

// Per-chunk partial sums of the CPU pass; chunks have a fixed size (independent of threads).
constexpr int64_t kPropensityChunk = 16384;
struct ChunkSums {
  double term = 0.0;
  double norm = 0.0;
  double class1 = 0.0;  // the part of term in l(z, 1) (kSurrogate losses); R_0's part is term - class1
  int invalid = 0;      // PropensityInvalid flags
};

// Message naming the first offending argument of a PropensityInvalid mask ("" when 0).
inline const char* propensity_invalid_message(int flags) {
  if (flags & kBadLogits) return "logits must be finite (found NaN or inf)";
  if (flags & kBadImputed) return "imputed_logits must be finite (found NaN or inf)";
  if (flags & kBadLabels) return "labels must lie in [0, 1] (found a value outside, or NaN)";
  if (flags & kBadObserved) return "observed must be 0 or 1 (found another value, or NaN)";
  if (flags & kBadPropensity) return "propensity must lie in (0, 1] (found a value outside, or NaN)";
  if (flags & kOverflow) {
    return "propensity: the weighted loss overflows the logits' dtype: a weight o / max(propensity, p_min) or a "
           "logit is too large (with p_min = 0 a tiny or denormal propensity gives an infinite weight); raise p_min, "
           "or use float64";
  }
  return "";
}

// Options that do not depend on array contents; throws std::invalid_argument.  Inline: the CPU
// and the CUDA module (separate libraries) both use it.
inline void check_propensity_options(const PropensityOptions& opt, const PropensityArrays& a) {
  require(opt.n_rows >= 0, "negative number of rows");
  require(opt.rho10 >= 0.0 && opt.rho10 < 1.0, "rho10 must lie in [0, 1)");
  require(opt.rho01 >= 0.0 && opt.rho01 < 1.0, "rho01 must lie in [0, 1)");
  require(1.0 - opt.rho10 - opt.rho01 > 0.0, "rho10 + rho01 must be < 1 (1 - rho10 - rho01 > 0)");
  require(opt.p_min >= 0.0 && opt.p_min <= 1.0, "p_min must lie in [0, 1]");
  require(opt.grad_prescale > 0.0, "grad_prescale must be positive");
  const int k = static_cast<int>(opt.loss), nn = static_cast<int>(opt.nonnegative);
  require(k >= 0 && k <= 2, "unknown loss kind code");
  require(nn >= 0 && nn <= 2, "unknown nonnegative code");
  require(opt.loss != LossKind::kMse || (opt.rho10 == 0.0 && opt.rho01 == 0.0),
          "base 'mse' takes ratings, not noisy binary labels: rho10 and rho01 must be 0");
  require(opt.loss != LossKind::kMse || !opt.pairwise, "base 'mse' is pointwise: logits must be [N]");
  const bool classwise = opt.nonnegative == NonNegative::kClasswise;
  require(!classwise || opt.loss == LossKind::kSurrogate,
          "nonnegative='classwise' splits the backward-corrected bce / bt risk by class: not defined for "
          "the forward correction or base 'mse'");
  require(!classwise || opt.reduction != Reduction::kNone,
          "nonnegative='classwise' is a rule on the reduced risk: reduction must be 'mean' or 'sum'");
  require(!classwise || (opt.estimator != Estimator::kDrJl && opt.estimator != Estimator::kMrdr),
          "nonnegative='classwise' applies to the risk estimators, not to the imputation objectives");
  require(opt.nn_beta >= 0.0 && opt.nn_gamma >= 0.0 && opt.nn_beta - opt.nn_beta == 0.0 &&
              opt.nn_gamma - opt.nn_gamma == 0.0,
          "beta and gamma must be finite and >= 0");
  const int e = static_cast<int>(opt.estimator), r = static_cast<int>(opt.reduction);
  require(e >= 0 && e <= kLastEstimator, "unknown estimator code");
  require(opt.estimator != Estimator::kSwitchDr || opt.tau >= 0.0, "tau must be >= 0 (may be inf)");
  require(opt.estimator != Estimator::kDros || opt.lambda_ >= 0.0, "lambda_ must be >= 0 for dros (may be inf)");
  require((opt.estimator != Estimator::kSgIps && opt.estimator != Estimator::kSgDr) ||
              (opt.lambda_ >= 0.0 && opt.lambda_ <= 1.0),
          "lambda_ must lie in [0, 1] for sg_ips and sg_dr");
  require(r >= 0 && r <= 2, "unknown reduction code");
  const bool rows = opt.n_rows > 0;
  require(!rows || (a.logits && a.labels && a.observed && a.loss), "logits, labels, observed and the loss are required");
  const bool imputed = estimator_uses_imputed(opt.estimator);
  require(!rows || !estimator_uses_propensity(opt.estimator) || a.propensity,
          "propensity is required by every estimator but naive");
  require(!rows || !imputed || a.imputed, "imputed_logits are required by this estimator");
  require(!opt.want_grad || a.grad_scale, "grad_scale output missing");
  require(!rows || !opt.want_grad || a.grad_logits, "grad_logits output missing");
  require(!rows || !opt.want_grad || !imputed || a.grad_imputed, "grad_imputed output missing");
  const bool byte_obs = a.observed_dtype == DType::kBool || a.observed_dtype == DType::kUInt8;
  require(byte_obs || a.observed_dtype == a.dtype, "observed must be bool/uint8 or have the dtype of logits");
}


// CPU implementation (propensity.cc): one fused pass, OpenMP over fixed chunks, sums combined in
// chunk order (bit-identical whatever the thread count).  Throws std::invalid_argument when the
// contents are invalid (NaN / inf logits, labels outside [0, 1], observed not 0/1, propensity
// outside (0, 1]), or when valid contents overflow the dtype (kOverflow: a row term or, with
// gradients, a row derivative not finite in the compute type, the float64 sums not finite, or
// a reduced loss beyond the dtype's range); the outputs are then unspecified.
void propensity_loss_cpu(const PropensityArrays& arrays, const PropensityOptions& opt);

// CUDA implementation (../cuda/propensity.cu), on the caller's stream (a cudaStream_t as an
// integer), without device synchronisation.  Reductions use a grid whose size depends on N only
// and a fixed-order combine (no atomics): the same input gives the same loss bit for bit.
// Invalid contents cannot raise without a synchronisation: they make the loss (and, for
// "none", the offending rows) NaN; so does an overflow (kOverflow, as on the CPU).  float16 /
// bfloat16 inputs are computed and accumulated in float32.
void propensity_loss_cuda(const PropensityArrays& arrays, const PropensityOptions& opt, int device, uintptr_t stream);

}  // namespace fk
