// The propensity pass compiled for AVX2 + FMA (flags set in CMakeLists.txt for this file on
// x86-64 GCC/Clang), used only where the processor reports both.  Elsewhere it compiles to a
// stub that declines.
#include "propensity.h"

#if defined(FK_PROPENSITY_AVX2) && (defined(__x86_64__) || defined(_M_X64)) && defined(__AVX2__) && defined(__FMA__)
#define FK_PROPENSITY_NAMESPACE cpu_avx2_impl
#include "propensity_kernel.h"
#undef FK_PROPENSITY_NAMESPACE

namespace fk {
namespace cpu_avx2 {

static bool supported_avx2() {
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
}

bool propensity_chunks_avx2(const PropensityArrays& a, const PropensityOptions& opt, const PassScalars& pass,
                           ChunkSums* sums) {
  if (!supported_avx2()) return false;
  cpu_avx2_impl::propensity_chunks(a, opt, pass, sums);
  return true;
}

bool propensity_weight_chunks_avx2(const PropensityArrays& a, const PropensityOptions& opt, ChunkSums* sums) {
  if (!supported_avx2()) return false;
  cpu_avx2_impl::propensity_weight_chunks(a, opt, sums);
  return true;
}

}  // namespace cpu_avx2
}  // namespace fk
#else
namespace fk {
namespace cpu_avx2 {
bool propensity_chunks_avx2(const PropensityArrays&, const PropensityOptions&, const PassScalars&, ChunkSums*) {
  return false;
}
bool propensity_weight_chunks_avx2(const PropensityArrays&, const PropensityOptions&, ChunkSums*) { return false; }
}  // namespace cpu_avx2
}  // namespace fk
#endif
