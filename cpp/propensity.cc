// CPU implementation of the propensity-weighted loss contract in propensity.h.
//
// One fused pass (propensity_kernel.h): each fixed chunk of rows computes the row terms, the
// normaliser, the (unscaled) per-row derivatives and the validity flags, reading every input
// once.  Chunk sums are combined here in chunk order, so the loss is bit-identical whatever the
// thread count.  float data is computed in float with branch-free exp / log1p approximations
// (relative error ~1e-7) so that the loop vectorises; double data uses the C library.  Where
// the processor has AVX2 + FMA the same pass compiled for them runs (propensity_avx2.cc): about
// twice the throughput; its results may differ from the baseline build in the last bits (FMA),
// but on one machine they never change.
#define FK_PROPENSITY_NAMESPACE cpu_baseline
#include "propensity_kernel.h"
#undef FK_PROPENSITY_NAMESPACE

#include <vector>

namespace fk {

namespace {
void write_scalar(void* out, DType dtype, double value) {
  if (dtype == DType::kFloat64) {
    *static_cast<double*>(out) = value;
  } else {
    *static_cast<float*>(out) = static_cast<float>(value);
  }
}
}  // namespace

const char* propensity_invalid_message(int flags) {
  if (flags & kBadLogits) return "logits must be finite (found NaN or inf)";
  if (flags & kBadImputed) return "imputed_logits must be finite (found NaN or inf)";
  if (flags & kBadLabels) return "labels must lie in [0, 1] (found a value outside, or NaN)";
  if (flags & kBadObserved) return "observed must be 0 or 1 (found another value, or NaN)";
  if (flags & kBadPropensity) return "propensity must lie in (0, 1] (found a value outside, or NaN)";
  return "";
}

void check_propensity_options(const PropensityOptions& opt, const PropensityArrays& a) {
  require(opt.n_rows >= 0, "negative number of rows");
  require(opt.rho10 >= 0.0 && opt.rho10 < 1.0, "rho10 must lie in [0, 1)");
  require(opt.rho01 >= 0.0 && opt.rho01 < 1.0, "rho01 must lie in [0, 1)");
  require(1.0 - opt.rho10 - opt.rho01 > 0.0, "rho10 + rho01 must be < 1 (1 - rho10 - rho01 > 0)");
  require(opt.p_min >= 0.0 && opt.p_min <= 1.0, "p_min must lie in [0, 1]");
  const int e = static_cast<int>(opt.estimator), r = static_cast<int>(opt.reduction);
  require(e >= 0 && e <= 3, "unknown estimator code");
  require(r >= 0 && r <= 2, "unknown reduction code");
  const bool rows = opt.n_rows > 0;
  require(!rows || (a.logits && a.labels && a.observed && a.loss), "logits, labels, observed and the loss are required");
  require(!rows || opt.estimator == Estimator::kNaive || a.propensity, "propensity is required by ips, snips and dr");
  require(!rows || opt.estimator != Estimator::kDr || a.imputed, "imputed_logits are required by dr");
  require(!opt.want_grad || a.grad_scale, "grad_scale output missing");
  require(!rows || !opt.want_grad || a.grad_logits, "grad_logits output missing");
  require(!rows || !opt.want_grad || opt.estimator != Estimator::kDr || a.grad_imputed, "grad_imputed output missing");
  const bool byte_obs = a.observed_dtype == DType::kBool || a.observed_dtype == DType::kUInt8;
  require(byte_obs || a.observed_dtype == a.dtype, "observed must be bool/uint8 or have the dtype of logits");
}

namespace cpu_avx2 {
// Defined in propensity_avx2.cc; false where that build is not available.
bool propensity_chunks_avx2(const PropensityArrays& a, const PropensityOptions& opt, ChunkSums* sums);
}  // namespace cpu_avx2

void propensity_loss_cpu(const PropensityArrays& a, const PropensityOptions& opt) {
  check_propensity_options(opt, a);
  require(a.dtype == DType::kFloat32 || a.dtype == DType::kFloat64, "logits must be float32 or float64 on the CPU");
  std::vector<ChunkSums> sums((opt.n_rows + kPropensityChunk - 1) / kPropensityChunk);
  if (!cpu_avx2::propensity_chunks_avx2(a, opt, sums.data())) cpu_baseline::propensity_chunks(a, opt, sums.data());
  ChunkSums total;
  for (const ChunkSums& s : sums) {  // chunk order: deterministic
    total.term += s.term;
    total.norm += s.norm;
    total.invalid |= s.invalid;
  }
  require(total.invalid == 0, propensity_invalid_message(total.invalid));
  if (opt.reduction == Reduction::kNone) {
    if (opt.want_grad) write_scalar(a.grad_scale, a.dtype, 1.0);
    return;
  }
  const Reduced reduced = propensity_reduce(opt, total.term, total.norm);
  write_scalar(a.loss, a.dtype, reduced.loss);
  if (opt.want_grad) write_scalar(a.grad_scale, a.dtype, reduced.grad_scale);
}

}  // namespace fk
