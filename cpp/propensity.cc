// CPU implementation of the propensity-weighted loss contract in propensity.h.
//
// One fused pass (propensity_kernel.h): each fixed chunk of rows computes the row terms, the
// normaliser, the (unscaled) per-row derivatives and the validity flags, reading every input
// once.  Chunk sums are combined here in chunk order, so the loss is bit-identical whatever the
// thread count.  float data is computed in float with branch-free exp / log1p approximations
// (relative error ~1e-7) so that the loop vectorises; double data uses the C library.  Where
// the processor has AVX2 + FMA (or AVX-512) the same pass compiled for them runs
// (propensity_avx2.cc, propensity_avx512.cc): about 2x (2.7x) the throughput; results may
// differ between these builds in the last bits (FMA), but on one machine they never change.
#define FK_PROPENSITY_NAMESPACE cpu_baseline
#include "propensity_kernel.h"
#undef FK_PROPENSITY_NAMESPACE

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace fk {

namespace {
// FAIRKERNELS_PROPENSITY_ISA=baseline|avx2 caps the instruction set (tests and benchmarks of the
// narrower builds); unset or anything else: the widest the processor runs.
int widest_build_allowed() {
  static const int widest = [] {
    const char* isa = std::getenv("FAIRKERNELS_PROPENSITY_ISA");
    if (isa != nullptr && std::strcmp(isa, "baseline") == 0) return 0;
    if (isa != nullptr && std::strcmp(isa, "avx2") == 0) return 1;
    return 2;
  }();
  return widest;
}

// Whether a reduced value survives the conversion to the output dtype.
bool representable(double value, DType dtype) {
  return dtype == DType::kFloat64 ? std::isfinite(value) : std::isfinite(static_cast<float>(value));
}

void write_scalar(void* out, DType dtype, double value) {
  if (dtype == DType::kFloat64) {
    *static_cast<double*>(out) = value;
  } else {
    *static_cast<float*>(out) = static_cast<float>(value);
  }
}
}  // namespace

namespace cpu_avx2 {
// Defined in propensity_avx2.cc; false where that build is not available.
bool propensity_chunks_avx2(const PropensityArrays& a, const PropensityOptions& opt, double self_norm,
                            ChunkSums* sums);
bool propensity_weight_chunks_avx2(const PropensityArrays& a, const PropensityOptions& opt, ChunkSums* sums);
}  // namespace cpu_avx2
namespace cpu_avx512 {
// Defined in propensity_avx512.cc; false where that build is not available.
bool propensity_chunks_avx512(const PropensityArrays& a, const PropensityOptions& opt, double self_norm,
                              ChunkSums* sums);
bool propensity_weight_chunks_avx512(const PropensityArrays& a, const PropensityOptions& opt, ChunkSums* sums);
}  // namespace cpu_avx512

namespace {
// The pass over the rows, in the widest build the processor runs: AVX-512 (~1.35x AVX2 here),
// AVX2 (~2x SSE2), baseline.
void run_chunks(const PropensityArrays& a, const PropensityOptions& opt, double self_norm, ChunkSums* sums) {
  const int widest = widest_build_allowed();
  if (!(widest >= 2 && cpu_avx512::propensity_chunks_avx512(a, opt, self_norm, sums)) &&
      !(widest >= 1 && cpu_avx2::propensity_chunks_avx2(a, opt, self_norm, sums))) {
    cpu_baseline::propensity_chunks(a, opt, self_norm, sums);
  }
}

// sndr's N / sum w, from a first pass over observed and propensity only (chunk order).
double self_norm_factor(const PropensityArrays& a, const PropensityOptions& opt, std::vector<ChunkSums>& sums) {
  const int widest = widest_build_allowed();
  if (!(widest >= 2 && cpu_avx512::propensity_weight_chunks_avx512(a, opt, sums.data())) &&
      !(widest >= 1 && cpu_avx2::propensity_weight_chunks_avx2(a, opt, sums.data()))) {
    cpu_baseline::propensity_weight_chunks(a, opt, sums.data());
  }
  double total = 0.0;
  for (const ChunkSums& s : sums) total += s.norm;
  return propensity_self_norm(opt.n_rows, total);
}
}  // namespace

void propensity_loss_cpu(const PropensityArrays& a, const PropensityOptions& opt) {
  check_propensity_options(opt, a);
  require(a.dtype == DType::kFloat32 || a.dtype == DType::kFloat64, "logits must be float32 or float64 on the CPU");
  std::vector<ChunkSums> sums((opt.n_rows + kPropensityChunk - 1) / kPropensityChunk);
  const double self_norm = opt.estimator == Estimator::kSndr ? self_norm_factor(a, opt, sums) : 0.0;
  run_chunks(a, opt, self_norm, sums.data());
  ChunkSums total;
  for (const ChunkSums& s : sums) {  // chunk order: deterministic
    total.term += s.term;
    total.norm += s.norm;
    total.invalid |= s.invalid;
  }
  if (propensity_sums_overflow(opt, total.term, total.norm)) total.invalid |= kOverflow;
  require(total.invalid == 0, propensity_invalid_message(total.invalid));
  if (opt.reduction == Reduction::kNone) {
    if (opt.want_grad) write_scalar(a.grad_scale, a.dtype, 1.0 / opt.grad_prescale);
    return;
  }
  const Reduced reduced = propensity_reduce(opt, total.term, total.norm);
  require(representable(reduced.loss, a.dtype), propensity_invalid_message(kOverflow));
  write_scalar(a.loss, a.dtype, reduced.loss);
  if (opt.want_grad) write_scalar(a.grad_scale, a.dtype, reduced.grad_scale / opt.grad_prescale);
}

}  // namespace fk
