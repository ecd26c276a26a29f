// CUDA implementation of the propensity-weighted loss contract in ../cpp/propensity.h.
//
// Two kernels on the caller's stream (plus, for sndr, weight_rows / weight_finish: its weight
// sum from a first pass over observed and propensity; with diagnostics, diagnostic_rows /
// diagnostic_finish; with nonnegative "classwise" and gradients, a second rows pass that exits
// at once unless the finish kernel flipped a class), no device synchronisation, no atomics:
//   1. rows: a grid-stride loop over the rows (grid size a function of N only) computes the
//      per-row formulas of propensity_math.h, writes the per-row outputs (rows of "none",
//      unscaled derivatives) and reduces the row terms, the normaliser and the validity flags
//      per block in a fixed tree order into scratch memory;
//   2. finish: one block combines the block partials in a fixed order (double) and writes the
//      loss and grad_scale (NaN when some content was invalid).
// So the same input gives the same loss bit for bit.  float16 / bfloat16 are loaded into float,
// computed and accumulated in float32; double stays double.
#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "propensity.h"
#include "propensity_math.h"

namespace fk {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;

struct FloatDeviceMath {
  static __device__ __forceinline__ float exp_neg(float a) { return expf(-a); }
  static __device__ __forceinline__ float log1p_unit(float e) { return log1pf(e); }
};
struct DoubleDeviceMath {
  static __device__ __forceinline__ double exp_neg(double a) { return exp(-a); }
  static __device__ __forceinline__ double log1p_unit(double e) { return log1p(e); }
};

template <typename T>
using Compute = std::conditional_t<std::is_same_v<T, double>, double, float>;
template <typename T>
using DeviceMath = std::conditional_t<std::is_same_v<T, double>, DoubleDeviceMath, FloatDeviceMath>;

template <typename T>
__device__ __forceinline__ Compute<T> load(const T* p, int64_t i) {
  if constexpr (std::is_same_v<T, double>) {
    return p[i];
  } else {
    return to_float(p[i]);
  }
}

template <typename R>
__device__ __forceinline__ bool finite(R x) {
  return isfinite(x);
}

template <typename ObsT, typename R>
__device__ __forceinline__ bool valid_observed(R o_value, ObsT raw) {
  if constexpr (std::is_same_v<ObsT, uint8_t>) {
    return raw <= 1;
  } else {
    return o_value == R(0) || o_value == R(1);
  }
}

template <typename ObsT, typename R>
__device__ __forceinline__ R observed_value(const ObsT* o, int64_t i) {
  if constexpr (std::is_same_v<ObsT, uint8_t>) {
    return o[i] ? R(1) : R(0);
  } else {
    return static_cast<R>(load(o, i));
  }
}

// Whether a reduced value survives the conversion to T (as the CPU's representable()).
template <typename T>
__device__ __forceinline__ bool representable(double value) {
  if constexpr (std::is_same_v<T, double>) {
    return isfinite(value);
  } else {
    return isfinite(to_float(from_value<T>(value)));
  }
}

// Block partials: [term, norm, class1] in the accumulator type, flags as int.
template <typename Acc>
struct Partials {
  Acc* term;
  Acc* norm;
  Acc* class1;
  int* invalid;
};

// Fixed-order tree reduction of the block's per-thread sums (shared arrays of kThreads
// entries, already written by every thread); the totals end in slot 0.  Deterministic.
template <typename V>
__device__ __forceinline__ void block_tree_reduce(V* term, V* norm, int* invalid) {
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) {
      term[threadIdx.x] += term[threadIdx.x + width];
      norm[threadIdx.x] += norm[threadIdx.x + width];
      invalid[threadIdx.x] |= invalid[threadIdx.x + width];
    }
    __syncthreads();
  }
}

// Fixed-order tree sum of one shared array of kThreads entries (already written); total in slot 0.
template <typename V>
__device__ __forceinline__ void block_tree_sum(V* x) {
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) x[threadIdx.x] += x[threadIdx.x + width];
    __syncthreads();
  }
}

// sndr, first pass: the sum of the clipped weights per block (fixed tree order, as the rows).
template <typename T, typename ObsT>
__global__ void __launch_bounds__(kThreads) weight_rows(PropensityArrays a, PropensityOptions opt,
                                                        Partials<typename Accumulator<T>::type> partials) {
  using R = Compute<T>;
  using Acc = typename Accumulator<T>::type;
  const T* p = static_cast<const T*>(a.propensity);
  const ObsT* o = static_cast<const ObsT*>(a.observed);
  const R p_min = static_cast<R>(opt.p_min);
  Acc sum = Acc(0);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < opt.n_rows; i += stride) {
    const R pk = load(p, i);
    sum += static_cast<Acc>(observed_value<ObsT, R>(o, i) / (pk > p_min ? pk : p_min));
  }
  __shared__ Acc s_term[kThreads];
  __shared__ Acc s_norm[kThreads];
  __shared__ int s_invalid[kThreads];
  s_term[threadIdx.x] = Acc(0);
  s_norm[threadIdx.x] = sum;
  s_invalid[threadIdx.x] = 0;
  block_tree_reduce(s_term, s_norm, s_invalid);
  if (threadIdx.x == 0) partials.norm[blockIdx.x] = s_norm[0];
}

// sndr: one block combines the weight partials (double, fixed order) into N / sum w.
template <typename Acc>
__global__ void __launch_bounds__(kThreads) weight_finish(PropensityOptions opt, Partials<Acc> partials,
                                                          int n_blocks, double* self_norm) {
  __shared__ double s_term[kThreads];
  __shared__ double s_norm[kThreads];
  __shared__ int s_invalid[kThreads];
  double norm = 0.0;
  for (int b = threadIdx.x; b < n_blocks; b += kThreads) norm += static_cast<double>(partials.norm[b]);
  s_term[threadIdx.x] = 0.0;
  s_norm[threadIdx.x] = norm;
  s_invalid[threadIdx.x] = 0;
  block_tree_reduce(s_term, s_norm, s_invalid);
  if (threadIdx.x == 0) *self_norm = propensity_self_norm(opt.n_rows, s_norm[0]);
}

// Device scalars of one call (scratch memory): sndr's factor (weight_finish) and the class-wise
// gradient factors (propensity_finish; 1, 1 otherwise).
struct DeviceScalars {
  double self_norm;
  double factor1;
  double factor0;
};

// self_norm / factors: read from device memory (DeviceScalars).  regrad: the class-wise second
// pass (propensity.h): only when propensity_finish flipped a class, and then it rewrites the
// gradients only (no partials, no loss rows).
template <Estimator E, LossKind K, typename T, typename ObsT, bool Pair>
__global__ void __launch_bounds__(kThreads) propensity_rows(PropensityArrays a, PropensityOptions opt,
                                                            RowConstants<Compute<T>> c, const DeviceScalars* scalars,
                                                            bool regrad, Partials<typename Accumulator<T>::type> partials) {
  using R = Compute<T>;
  if constexpr (E == Estimator::kSndr) c.self_norm = static_cast<R>(scalars->self_norm);
  if (regrad) {
    if (scalars->factor1 == 1.0 && scalars->factor0 == 1.0) return;  // the first pass was right
    c.factor1 = static_cast<R>(scalars->factor1);
    c.factor0 = static_cast<R>(scalars->factor0);
  }
  using Acc = typename Accumulator<T>::type;
  const T* f = static_cast<const T*>(a.logits);
  const T* h = static_cast<const T*>(a.imputed);
  const T* y = static_cast<const T*>(a.labels);
  const ObsT* o = static_cast<const ObsT*>(a.observed);
  const T* p = static_cast<const T*>(a.propensity);
  T* loss = static_cast<T*>(a.loss);
  T* df = static_cast<T*>(a.grad_logits);
  T* dh = static_cast<T*>(a.grad_imputed);
  const bool per_row = opt.reduction == Reduction::kNone;
  const bool clamp_rows = per_row && opt.nonnegative == NonNegative::kTotal;

  Acc sum_term = Acc(0), sum_norm = Acc(0), sum_class1 = Acc(0);
  int invalid = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < opt.n_rows; i += stride) {
    int bad = 0;
    R z, hk = R(0), pk = R(1);
    if constexpr (Pair) {
      const R f0 = load(f, 2 * i), f1 = load(f, 2 * i + 1);
      bad |= (finite(f0) && finite(f1)) ? 0 : kBadLogits;
      z = f0 - f1;
      if constexpr (estimator_uses_imputed(E)) {
        const R h0 = load(h, 2 * i), h1 = load(h, 2 * i + 1);
        bad |= (finite(h0) && finite(h1)) ? 0 : kBadImputed;
        hk = h0 - h1;
      }
    } else {
      z = load(f, i);
      if constexpr (estimator_uses_imputed(E)) hk = load(h, i);
    }
    bad |= finite(z) ? 0 : kBadLogits;
    if constexpr (estimator_uses_imputed(E)) bad |= finite(hk) ? 0 : kBadImputed;
    const R yk = load(y, i);
    bad |= (yk >= R(0) && yk <= R(1)) ? 0 : kBadLabels;
    const R ok = observed_value<ObsT, R>(o, i);
    bad |= valid_observed<ObsT, R>(ok, o[i]) ? 0 : kBadObserved;
    if constexpr (estimator_uses_propensity(E)) {
      pk = load(p, i);
      bad |= (pk > R(0) && pk <= R(1)) ? 0 : kBadPropensity;
    }
    // The class split always where it exists: on the device the extra arithmetic is hidden
    // behind the memory traffic, and one instantiation per estimator keeps the build short.
    RowResult<R> r = propensity_row<E, K, kHasClasses<E, K>, R, DeviceMath<T>>(z, yk, ok, pk, hk, c);
    if (clamp_rows && r.term < R(0)) {
      r.term = R(0);
      r.d_logit = R(0);
      r.d_impute = R(0);
    }
    // As the CPU kernel: finite inputs with a non-finite (clamped) row term or derivative: the
    // weight overflowed R.  (The CPU sees the term through its sum, the derivatives per row.)
    const bool row_ok = finite(r.term) && (!opt.want_grad || (finite(r.d_logit) && finite(r.d_impute)));
    bad |= row_ok ? 0 : kOverflow;
    if (bad) r.term = R(NAN);  // visible in the rows of "none" (the flag poisons the reduction)
    invalid |= bad;
    sum_term += static_cast<Acc>(r.term);
    sum_norm += static_cast<Acc>(r.norm);
    sum_class1 += static_cast<Acc>(r.class1);
    if (per_row) loss[i] = from_value<T>(r.term);
    if (opt.want_grad) {
      r.d_logit *= c.grad_prescale;
      r.d_impute *= c.grad_prescale;
      if constexpr (Pair) {
        df[2 * i] = from_value<T>(r.d_logit);
        df[2 * i + 1] = from_value<T>(-r.d_logit);
        if constexpr (estimator_uses_imputed(E)) {
          dh[2 * i] = from_value<T>(r.d_impute);
          dh[2 * i + 1] = from_value<T>(-r.d_impute);
        }
      } else {
        df[i] = from_value<T>(r.d_logit);
        if constexpr (estimator_uses_imputed(E)) dh[i] = from_value<T>(r.d_impute);
      }
    }
  }

  if (regrad) return;  // the sums of the first pass stand
  // Fixed-order tree reduction within the block.
  __shared__ Acc s_term[kThreads];
  __shared__ Acc s_norm[kThreads];
  __shared__ Acc s_class1[kThreads];
  __shared__ int s_invalid[kThreads];
  s_term[threadIdx.x] = sum_term;
  s_norm[threadIdx.x] = sum_norm;
  s_class1[threadIdx.x] = sum_class1;
  s_invalid[threadIdx.x] = invalid;
  block_tree_reduce(s_term, s_norm, s_invalid);
  block_tree_sum(s_class1);
  if (threadIdx.x == 0) {
    partials.term[blockIdx.x] = s_term[0];
    partials.norm[blockIdx.x] = s_norm[0];
    partials.class1[blockIdx.x] = s_class1[0];
    partials.invalid[blockIdx.x] = s_invalid[0];
  }
}

// Diagnostics, first kernel: per block sum v, sum v^2, observed and clipped rows (double).
template <Estimator E, typename T, typename ObsT>
__global__ void __launch_bounds__(kThreads) diagnostic_rows(PropensityArrays a, PropensityOptions opt,
                                                            RowConstants<Compute<T>> c, const DeviceScalars* scalars,
                                                            double* partials) {
  using R = Compute<T>;
  if constexpr (E == Estimator::kSndr) c.self_norm = static_cast<R>(scalars->self_norm);
  const T* p = static_cast<const T*>(a.propensity);
  const ObsT* o = static_cast<const ObsT*>(a.observed);
  double v_sum = 0.0, v2_sum = 0.0, observed = 0.0, clipped = 0.0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < opt.n_rows; i += stride) {
    const R ok = observed_value<ObsT, R>(o, i);
    const R pk = p != nullptr ? load(p, i) : R(1);
    const R v = transformed_weight<E, R>(clipped_weight<E, R>(ok, pk, c), c);
    v_sum += v;
    v2_sum += static_cast<double>(v) * v;
    observed += ok;
    clipped += (ok != R(0) && pk < c.p_min) ? 1.0 : 0.0;
  }
  __shared__ double s[4][kThreads];
  s[0][threadIdx.x] = v_sum;
  s[1][threadIdx.x] = v2_sum;
  s[2][threadIdx.x] = observed;
  s[3][threadIdx.x] = clipped;
  for (int k = 0; k < 4; ++k) block_tree_sum(s[k]);
  if (threadIdx.x == 0) {
    for (int k = 0; k < 4; ++k) partials[k * gridDim.x + blockIdx.x] = s[k][0];
  }
}

// Diagnostics, second kernel: ess and the clipped share (R_1, R_0 come from propensity_finish).
__global__ void __launch_bounds__(kThreads) diagnostic_finish(PropensityOptions opt, const double* partials,
                                                              int n_blocks, double* out) {
  __shared__ double s[4][kThreads];
  for (int k = 0; k < 4; ++k) {
    double x = 0.0;
    for (int b = threadIdx.x; b < n_blocks; b += kThreads) x += partials[k * n_blocks + b];
    s[k][threadIdx.x] = x;
    block_tree_sum(s[k]);
  }
  if (threadIdx.x != 0) return;
  out[kEss] = s[1][0] > 0.0 ? s[0][0] * s[0][0] / s[1][0] : 0.0;
  out[kClippedShare] = opt.estimator != Estimator::kNaive && s[2][0] > 0.0 ? s[3][0] / s[2][0] : NAN;
}

// One block: combine the block partials (double, fixed order) and write loss and grad_scale.
// Also writes the class-wise factors into scalars and, when asked, R_1 and R_0 (diagnostics).
template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads) propensity_finish(PropensityOptions opt, Partials<Acc> partials,
                                                              int n_blocks, T* loss, T* grad_scale,
                                                              DeviceScalars* scalars, double* diagnostics) {
  __shared__ double s_term[kThreads];
  __shared__ double s_norm[kThreads];
  __shared__ double s_class1[kThreads];
  __shared__ int s_invalid[kThreads];
  double term = 0.0, norm = 0.0, class1 = 0.0;
  int invalid = 0;
  for (int b = threadIdx.x; b < n_blocks; b += kThreads) {
    term += static_cast<double>(partials.term[b]);
    norm += static_cast<double>(partials.norm[b]);
    class1 += static_cast<double>(partials.class1[b]);
    invalid |= partials.invalid[b];
  }
  s_term[threadIdx.x] = term;
  s_norm[threadIdx.x] = norm;
  s_class1[threadIdx.x] = class1;
  s_invalid[threadIdx.x] = invalid;
  block_tree_reduce(s_term, s_norm, s_invalid);
  block_tree_sum(s_class1);
  if (threadIdx.x != 0) return;
  // As the CPU: sums that overflow, or a loss beyond the dtype, count as invalid (NaN).
  bool bad = s_invalid[0] != 0 || propensity_sums_overflow(opt, s_term[0], s_norm[0]);
  scalars->factor1 = 1.0;
  scalars->factor0 = 1.0;
  if (diagnostics != nullptr) {
    PropensityOptions as_mean = opt;
    if (as_mean.reduction == Reduction::kNone) as_mean.reduction = Reduction::kMean;
    const Reduced r = propensity_reduce(as_mean, s_term[0], s_norm[0], s_class1[0]);
    const bool classes = opt.loss == LossKind::kSurrogate && opt.estimator != Estimator::kDrJl &&
                         opt.estimator != Estimator::kMrdr && !bad;
    diagnostics[kRisk1] = classes ? r.risk1 : NAN;
    diagnostics[kRisk0] = classes ? r.risk0 : NAN;
  }
  if (opt.reduction == Reduction::kNone) {
    if (opt.want_grad) *grad_scale = from_value<T>(bad ? NAN : 1.0 / opt.grad_prescale);
    return;
  }
  const Reduced reduced = propensity_reduce(opt, s_term[0], s_norm[0], s_class1[0]);
  bad = bad || !representable<T>(reduced.loss);
  scalars->factor1 = reduced.factor1;
  scalars->factor0 = reduced.factor0;
  *loss = from_value<T>(bad ? NAN : reduced.loss);
  if (opt.want_grad) *grad_scale = from_value<T>(bad ? NAN : reduced.grad_scale / opt.grad_prescale);
}

template <Estimator E, LossKind K, typename T, typename ObsT, bool Pair>
void launch(const PropensityArrays& a, const PropensityOptions& opt, cudaStream_t stream) {
  using R = Compute<T>;
  using Acc = typename Accumulator<T>::type;
  // The grid depends on N only (never on the device), so the reduction order is fixed.
  const int blocks = blocks_for(opt.n_rows, kThreads, kMaxBlocks);
  const bool diagnose = a.diagnostics != nullptr;
  // Scratch: the device scalars (doubles, first: aligned), the diagnostic partials (4 x blocks
  // doubles, when asked), then the partials of the rows.
  const size_t diag_doubles = diagnose ? 4 * static_cast<size_t>(blocks) : 0;
  StreamBuffer scratch(sizeof(DeviceScalars) + diag_doubles * sizeof(double) +
                           static_cast<size_t>(blocks) * (3 * sizeof(Acc) + sizeof(int)),
                       stream);
  DeviceScalars* scalars = scratch.as<DeviceScalars>();
  double* diag_partials = reinterpret_cast<double*>(scalars + 1);
  Acc* acc = reinterpret_cast<Acc*>(diag_partials + diag_doubles);
  Partials<Acc> partials{acc, acc + blocks, acc + 2 * blocks, reinterpret_cast<int*>(acc + 3 * blocks)};
  const RowConstants<R> c = row_constants<R>(opt, PassScalars{});
  if (opt.n_rows > 0) {
    if constexpr (E == Estimator::kSndr) {
      weight_rows<T, ObsT><<<blocks, kThreads, 0, stream>>>(a, opt, partials);
      check(cudaGetLastError(), "weight_rows launch");
      weight_finish<Acc><<<1, kThreads, 0, stream>>>(opt, partials, blocks, &scalars->self_norm);
      check(cudaGetLastError(), "weight_finish launch");
    }
    propensity_rows<E, K, T, ObsT, Pair><<<blocks, kThreads, 0, stream>>>(a, opt, c, scalars, false, partials);
    check(cudaGetLastError(), "propensity_rows launch");
    if (diagnose) {
      diagnostic_rows<E, T, ObsT><<<blocks, kThreads, 0, stream>>>(a, opt, c, scalars, diag_partials);
      check(cudaGetLastError(), "diagnostic_rows launch");
    }
  }
  const int finished_blocks = opt.n_rows > 0 ? blocks : 0;
  double* diagnostics = static_cast<double*>(a.diagnostics);
  propensity_finish<T, Acc><<<1, kThreads, 0, stream>>>(opt, partials, finished_blocks, static_cast<T*>(a.loss),
                                                        static_cast<T*>(a.grad_scale), scalars, diagnostics);
  check(cudaGetLastError(), "propensity_finish launch");
  if (diagnose) {
    diagnostic_finish<<<1, kThreads, 0, stream>>>(opt, diag_partials, finished_blocks, diagnostics);
    check(cudaGetLastError(), "diagnostic_finish launch");
  }
  if (opt.n_rows > 0 && opt.want_grad && opt.nonnegative == NonNegative::kClasswise) {
    // Returns at once unless propensity_finish flipped a class (no synchronisation needed).
    propensity_rows<E, K, T, ObsT, Pair><<<blocks, kThreads, 0, stream>>>(a, opt, c, scalars, true, partials);
    check(cudaGetLastError(), "propensity_rows (class-wise gradients) launch");
  }
}

template <Estimator E, LossKind K, typename T>
void dispatch_layout(const PropensityArrays& a, const PropensityOptions& opt, cudaStream_t stream) {
  const bool byte_obs = a.observed_dtype == DType::kBool || a.observed_dtype == DType::kUInt8;
  constexpr bool kPairs = K != LossKind::kMse;  // mse is pointwise (checked with the options)
  if (byte_obs) {
    if constexpr (kPairs) {
      if (opt.pairwise) return launch<E, K, T, uint8_t, true>(a, opt, stream);
    }
    return launch<E, K, T, uint8_t, false>(a, opt, stream);
  }
  if constexpr (kPairs) {
    if (opt.pairwise) return launch<E, K, T, T, true>(a, opt, stream);
  }
  launch<E, K, T, T, false>(a, opt, stream);
}

template <Estimator E, typename T>
void dispatch_loss(const PropensityArrays& a, const PropensityOptions& opt, cudaStream_t stream) {
  switch (opt.loss) {
    case LossKind::kSurrogate: return dispatch_layout<E, LossKind::kSurrogate, T>(a, opt, stream);
    case LossKind::kForward: return dispatch_layout<E, LossKind::kForward, T>(a, opt, stream);
    case LossKind::kMse: return dispatch_layout<E, LossKind::kMse, T>(a, opt, stream);
  }
}

template <typename T>
void dispatch_estimator(const PropensityArrays& a, const PropensityOptions& opt, cudaStream_t stream) {
  switch (opt.estimator) {
#define FK_CASE(e) \
  case Estimator::e: return dispatch_loss<Estimator::e, T>(a, opt, stream);
    FK_CASE(kNaive) FK_CASE(kIps) FK_CASE(kSnips) FK_CASE(kDr) FK_CASE(kSndr) FK_CASE(kSwitchDr) FK_CASE(kDros)
    FK_CASE(kSgIps) FK_CASE(kSgDr) FK_CASE(kDrJl) FK_CASE(kMrdr)
#undef FK_CASE
  }
}

}  // namespace
}  // namespace cuda

void propensity_loss_cuda(const PropensityArrays& a, const PropensityOptions& opt, int device, uintptr_t stream_handle) {
  check_propensity_options(opt, a);
  cuda::DeviceGuard guard(device);
  const cudaStream_t stream = cuda::as_stream(stream_handle);
  switch (a.dtype) {
    case DType::kFloat32: return cuda::dispatch_estimator<float>(a, opt, stream);
    case DType::kFloat64: return cuda::dispatch_estimator<double>(a, opt, stream);
    case DType::kFloat16: return cuda::dispatch_estimator<__half>(a, opt, stream);
    case DType::kBFloat16: return cuda::dispatch_estimator<__nv_bfloat16>(a, opt, stream);
    default: require(false, "logits must be float16, bfloat16, float32 or float64 on CUDA");
  }
}

}  // namespace fk
