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
int64_t dense_ids_direct(const int64_t* ids, int64_t n, int64_t lo, uint64_t range, std::vector<int64_t>& dense,
                         std::vector<int64_t>& table) {
  table.assign(range + 1, -1);
  int64_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t& slot = table[static_cast<uint64_t>(ids[i]) - static_cast<uint64_t>(lo)];
    if (slot < 0) slot = next++;
    dense[i] = slot;
  }
  return next;
}

int64_t dense_ids_hashed(const int64_t* ids, int64_t n, std::vector<int64_t>& dense, std::vector<int64_t>& keys,
                         std::vector<int64_t>& values) {
  uint64_t capacity = 16;
  while (capacity < 2 * static_cast<uint64_t>(n)) capacity <<= 1;
  const uint64_t mask = capacity - 1;
  keys.resize(capacity);
  values.assign(capacity, -1);
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

Grouping fixed_grouping(int64_t n_rows, int64_t group_size) {
  Grouping grouping;
  grouping.fixed_size = group_size;
  grouping.n_groups = group_size > 0 ? n_rows / group_size : 0;
  return grouping;
}

void grouping_from_ids(const int64_t* ids, int64_t n, Grouping& grouping) {
  grouping.fixed_size = 0;
  grouping.n_groups = 0;
  grouping.start.assign(1, 0);
  grouping.rows.clear();
  if (n == 0) return;
  const auto [lo_it, hi_it] = std::minmax_element(ids, ids + n);
  const uint64_t range = static_cast<uint64_t>(*hi_it) - static_cast<uint64_t>(*lo_it);
  std::vector<int64_t>& dense = grouping.dense;
  dense.resize(n);
  grouping.n_groups = range < 4 * static_cast<uint64_t>(n)
                          ? dense_ids_direct(ids, n, *lo_it, range, dense, grouping.table)
                          : dense_ids_hashed(ids, n, dense, grouping.keys, grouping.table);
  // Counting sort of the rows by dense id; stable, so rows stay in increasing order.
  std::vector<int64_t>& start = grouping.start;
  start.assign(grouping.n_groups + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++start[dense[i] + 1];
  for (int64_t g = 0; g < grouping.n_groups; ++g) start[g + 1] += start[g];
  // The table is free again: reuse it as the scatter cursor.
  std::vector<int64_t>& cursor = grouping.table;
  cursor.assign(start.begin(), start.end() - 1);
  grouping.rows.resize(n);
  for (int64_t i = 0; i < n; ++i) grouping.rows[cursor[dense[i]]++] = i;
}

}  // namespace fk
