// Turning group ids (any int64 values, unsorted, non-contiguous) into dense groups.
// Shared by every kernel family that works on groups of rows.
#pragma once

#include <cstdint>
#include <vector>

namespace fk {

// Compressed rows of each group: the rows of group g are rows[start[g] .. start[g+1]),
// in increasing row order.  Groups are numbered in order of first appearance.
struct Grouping {
  int64_t n_groups = 0;
  int64_t fixed_size = 0;        // > 0: implicit groups of this size, start/rows unused
  std::vector<int64_t> start;
  std::vector<int64_t> rows;
  std::vector<int64_t> dense;    // scratch: dense group index of each row
  std::vector<int64_t> table;    // scratch: id -> dense index (direct table or hash values)
  std::vector<int64_t> keys;     // scratch: hash keys

  int64_t size(int64_t g) const { return fixed_size ? fixed_size : start[g + 1] - start[g]; }
  int64_t row(int64_t g, int64_t j) const { return fixed_size ? g * fixed_size + j : rows[start[g] + j]; }
};

Grouping fixed_grouping(int64_t n_rows, int64_t group_size);

// O(N): a direct-address table when the id range is small, open-addressing hashing otherwise.
// Fills `grouping` in place, reusing its buffers: callers keep one per thread so that repeated
// calls (a training loop) do not pay page faults for fresh O(N) buffers every step.
void grouping_from_ids(const int64_t* group_ids, int64_t n_rows, Grouping& grouping);

}  // namespace fk
