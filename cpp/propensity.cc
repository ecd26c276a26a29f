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
#include <limits>
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
bool propensity_chunks_avx2(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass,
                            ChunkSums* sums);
bool propensity_weight_chunks_avx2(const PropensityArrays& a, const PropensityOptions& opt, ChunkSums* sums);
}  // namespace cpu_avx2
namespace cpu_avx512 {
// Defined in propensity_avx512.cc; false where that build is not available.
bool propensity_chunks_avx512(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass,
                              ChunkSums* sums);
bool propensity_weight_chunks_avx512(const PropensityArrays& a, const PropensityOptions& opt, ChunkSums* sums);
}  // namespace cpu_avx512

namespace {
// The pass over the rows, in the widest build the processor runs: AVX-512 (~1.35x AVX2 here),
// AVX2 (~2x SSE2), baseline.
void run_chunks(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass, ChunkSums* sums) {
  const int widest = widest_build_allowed();
  if (!(widest >= 2 && cpu_avx512::propensity_chunks_avx512(a, opt, pass, sums)) &&
      !(widest >= 1 && cpu_avx2::propensity_chunks_avx2(a, opt, pass, sums))) {
    cpu_baseline::propensity_chunks(a, opt, pass, sums);
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
// Sums over the rows for the diagnostics: sum v, sum v^2, observed rows, clipped ones.
struct WeightSums {
  double v = 0.0, v2 = 0.0, observed = 0.0, clipped = 0.0;
};

template <Estimator E, typename T, typename ObsT>
WeightSums weight_sums(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass) {
  const RowConstants<T> c = row_constants<T>(opt, pass);
  const T* p = static_cast<const T*>(a.propensity);
  const ObsT* o = static_cast<const ObsT*>(a.observed);
  std::vector<WeightSums> chunks((opt.n_rows + kPropensityChunk - 1) / kPropensityChunk);
  parallel_chunks(opt.n_rows, kPropensityChunk, [&](int64_t chunk, int64_t begin, int64_t end) {
    WeightSums s;
    for (int64_t i = begin; i < end; ++i) {
      const T ok = static_cast<T>(o[i]);
      const T pk = p != nullptr ? p[i] : T(1);
      const T v = transformed_weight<E, T>(clipped_weight<E, T>(ok, pk, c), c);
      s.v += v;
      s.v2 += static_cast<double>(v) * v;
      s.observed += ok;
      s.clipped += (ok != T(0)) & (pk < c.p_min);
    }
    chunks[chunk] = s;
  });
  WeightSums total;
  for (const WeightSums& s : chunks) {  // chunk order: deterministic
    total.v += s.v;
    total.v2 += s.v2;
    total.observed += s.observed;
    total.clipped += s.clipped;
  }
  return total;
}

template <Estimator E, typename T>
WeightSums weight_sums_observed(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass) {
  if (a.observed_dtype == a.dtype) return weight_sums<E, T, T>(a, opt, pass);
  return weight_sums<E, T, uint8_t>(a, opt, pass);
}

template <typename T>
WeightSums weight_sums_for(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass) {
  switch (opt.estimator) {
#define FK_CASE(e) \
  case Estimator::e: return weight_sums_observed<Estimator::e, T>(a, opt, pass);
    FK_CASE(kNaive) FK_CASE(kIps) FK_CASE(kSnips) FK_CASE(kDr) FK_CASE(kSndr) FK_CASE(kSwitchDr) FK_CASE(kDros)
    FK_CASE(kSgIps) FK_CASE(kSgDr) FK_CASE(kDrJl) FK_CASE(kMrdr)
#undef FK_CASE
  }
  return WeightSums{};
}

// Writes the diagnostics (PropensityDiagnostic) after a successful pass.
void write_diagnostics(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass,
                       const ChunkSums& total) {
  const WeightSums w = a.dtype == DType::kFloat64 ? weight_sums_for<double>(a, opt, pass)
                                                  : weight_sums_for<float>(a, opt, pass);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  double* out = static_cast<double*>(a.diagnostics);
  out[kEss] = w.v2 > 0.0 ? w.v * w.v / w.v2 : 0.0;
  out[kClippedShare] = opt.estimator != Estimator::kNaive && w.observed > 0.0 ? w.clipped / w.observed : nan;
  const bool classes = opt.loss == LossKind::kSurrogate && opt.estimator != Estimator::kDrJl &&
                       opt.estimator != Estimator::kMrdr;
  PropensityOptions as_mean = opt;
  if (as_mean.reduction == Reduction::kNone) as_mean.reduction = Reduction::kMean;
  const Reduced reduced = propensity_reduce(as_mean, total.term, total.norm, total.class1);
  out[kRisk1] = classes ? reduced.risk1 : nan;
  out[kRisk0] = classes ? reduced.risk0 : nan;
}
}  // namespace

void propensity_loss_cpu(const PropensityArrays& a, const PropensityOptions& opt) {
  check_propensity_options(opt, a);
  require(a.dtype == DType::kFloat32 || a.dtype == DType::kFloat64, "logits must be float32 or float64 on the CPU");
  std::vector<ChunkSums> sums((opt.n_rows + kPropensityChunk - 1) / kPropensityChunk);
  PassScalars pass;
  if (opt.estimator == Estimator::kSndr) pass.self_norm = self_norm_factor(a, opt, sums);
  run_chunks(a, opt, pass, sums.data());
  ChunkSums total;
  for (const ChunkSums& s : sums) {  // chunk order: deterministic
    total.term += s.term;
    total.norm += s.norm;
    total.class1 += s.class1;
    total.invalid |= s.invalid;
  }
  if (propensity_sums_overflow(opt, total.term, total.norm)) total.invalid |= kOverflow;
  require(total.invalid == 0, propensity_invalid_message(total.invalid));
  if (a.diagnostics != nullptr) write_diagnostics(a, opt, pass, total);
  if (opt.reduction == Reduction::kNone) {
    if (opt.want_grad) write_scalar(a.grad_scale, a.dtype, 1.0 / opt.grad_prescale);
    return;
  }
  const Reduced reduced = propensity_reduce(opt, total.term, total.norm, total.class1);
  require(representable(reduced.loss, a.dtype), propensity_invalid_message(kOverflow));
  if (opt.want_grad && (reduced.factor1 != 1.0 || reduced.factor0 != 1.0)) {
    // The class-wise rule flipped a class: the gradients of the first pass are rewritten with
    // the class factors (the sums of this second pass are the same and are not used).
    pass.factor1 = reduced.factor1;
    pass.factor0 = reduced.factor0;
    run_chunks(a, opt, pass, sums.data());
    int invalid = 0;
    for (const ChunkSums& s : sums) invalid |= s.invalid;
    require(invalid == 0, propensity_invalid_message(invalid));
  }
  write_scalar(a.loss, a.dtype, reduced.loss);
  if (opt.want_grad) write_scalar(a.grad_scale, a.dtype, reduced.grad_scale / opt.grad_prescale);
}

}  // namespace fk
