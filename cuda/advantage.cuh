// CUDA launcher of the group-relative advantage contract (../cpp/advantage.h).
#pragma once

#include <cstdint>

#include "advantage.h"

namespace fk {

// Runs on `stream` of `device`; returns without synchronising.  Scratch memory is taken
// stream-ordered (cudaMallocAsync) and released the same way.
void group_advantages_cuda(const AdvantageArrays& arrays, const AdvantageOptions& opt, int device, uintptr_t stream);

}  // namespace fk
