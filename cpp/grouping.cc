#include "grouping.h"

#include <algorithm>

namespace fk {
namespace {

// splitmix64 finaliser: spreads consecutive or strided ids over the table.
inline uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// dense[i] = index of row i's group, numbered by first appearance.
int64_t dense_ids_direct(const int64_t* ids, int64_t n, int64_t lo, uint64_t range, std::vector<int64_t>& dense) {
  std::vector<int64_t> table(range + 1, -1);
  int64_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t& slot = table[static_cast<uint64_t>(ids[i]) - static_cast<uint64_t>(lo)];
    if (slot < 0) slot = next++;
    dense[i] = slot;
  }
  return next;
}

int64_t dense_ids_hashed(const int64_t* ids, int64_t n, std::vector<int64_t>& dense) {
  uint64_t capacity = 16;
  while (capacity < 2 * static_cast<uint64_t>(n)) capacity <<= 1;
  const uint64_t mask = capacity - 1;
  std::vector<int64_t> keys(capacity);
  std::vector<int64_t> values(capacity, -1);
  int64_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint64_t h = mix(static_cast<uint64_t>(ids[i])) & mask;
    while (values[h] >= 0 && keys[h] != ids[i]) h = (h + 1) & mask;  // linear probing
    if (values[h] < 0) {
      keys[h] = ids[i];
      values[h] = next++;
    }
    dense[i] = values[h];
  }
  return next;
}

}  // namespace

int64_t Grouping::max_size() const {
  if (fixed_size) return fixed_size;
  int64_t best = 0;
  for (int64_t g = 0; g < n_groups; ++g) best = std::max(best, size(g));
  return best;
}

Grouping fixed_grouping(int64_t n_rows, int64_t group_size) {
  Grouping grouping;
  grouping.fixed_size = group_size;
  grouping.n_groups = group_size > 0 ? n_rows / group_size : 0;
  return grouping;
}

Grouping grouping_from_ids(const int64_t* ids, int64_t n) {
  Grouping grouping;
  if (n == 0) return grouping;
  const auto [lo_it, hi_it] = std::minmax_element(ids, ids + n);
  const uint64_t range = static_cast<uint64_t>(*hi_it) - static_cast<uint64_t>(*lo_it);
  std::vector<int64_t> dense(n);
  grouping.n_groups = range < 4 * static_cast<uint64_t>(n) ? dense_ids_direct(ids, n, *lo_it, range, dense)
                                                          : dense_ids_hashed(ids, n, dense);
  // Counting sort of the rows by dense id; stable, so rows stay in increasing order.
  grouping.start.assign(grouping.n_groups + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++grouping.start[dense[i] + 1];
  for (int64_t g = 0; g < grouping.n_groups; ++g) grouping.start[g + 1] += grouping.start[g];
  std::vector<int64_t> cursor(grouping.start.begin(), grouping.start.end() - 1);
  grouping.rows.resize(n);
  for (int64_t i = 0; i < n; ++i) grouping.rows[cursor[dense[i]]++] = i;
  return grouping;
}

}  // namespace fk
