// The propensity pass compiled for AVX-512 (F, DQ, VL, BW) + FMA with 512-bit vectors (flags
// set in CMakeLists.txt for this file on x86-64 GCC/Clang), used only where the processor
// reports all of them.  Elsewhere it compiles to a stub that declines.
#include "propensity.h"

#if defined(FK_PROPENSITY_AVX512) && (defined(__x86_64__) || defined(_M_X64)) && defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__FMA__)
#define FK_PROPENSITY_NAMESPACE cpu_avx512_impl
#include "propensity_kernel.h"
#undef FK_PROPENSITY_NAMESPACE

namespace fk {
namespace cpu_avx512 {

static bool supported_avx512() {
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("fma");
  return supported;
}

bool propensity_chunks_avx512(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass,
                           ChunkSums* sums) {
  if (!supported_avx512()) return false;
  cpu_avx512_impl::propensity_chunks(a, opt, pass, sums);
  return true;
}

bool propensity_weight_chunks_avx512(const PropensityArrays& a, const PropensityOptions& opt, ChunkSums* sums) {
  if (!supported_avx512()) return false;
  cpu_avx512_impl::propensity_weight_chunks(a, opt, sums);
  return true;
}

}  // namespace cpu_avx512
}  // namespace fk
#else
namespace fk {
namespace cpu_avx512 {
bool propensity_chunks_avx512(const PropensityArrays&, const PropensityOptions&, const PassScalars&, ChunkSums*) {
  return false;
}
bool propensity_weight_chunks_avx512(const PropensityArrays&, const PropensityOptions&, ChunkSums*) { return false; }
}  // namespace cpu_avx512
}  // namespace fk
#endif
