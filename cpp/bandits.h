// Grid confidence bounds and Optimistic Feasible Search (OFS): the "bandits" kernel family.
//
// One contract, two compiled implementations: bandits.cc (CPU) and ../cuda/bandits.cu (CUDA).
// The per-learner arithmetic they share (bounds, selection rules, Philox, binomial draws, the
// closed-loop round) lives in bandits_core.h as __host__ __device__ inline functions, so both
// run the same operations in the same order.  The numpy reference is tests/bandits_reference.py.
//
// State of B learners over a K-point threshold grid with M constraints; V = 1 + M values per
// observation (value 0 = reward in [0, 1], values 1..M = residuals in [-1, 1], feasible <= 0).
// Every observation carries a weight w = number of individuals it averages over, so counts are
// in individuals, not rounds.  All state arrays are float64, C-contiguous:
//   count [B, K]     individuals seen on each arm          total [B]  individuals in all
//   rounds[B, K]     observations on each arm (Bernstein variance)
//   sum   [B, V, K]  sum of w * x        sumsq [B, V, K]  sum of w * x^2
//   mean  [B, V, K]  sum / count (0 while untried)      inv_sqrt [B, K]  1/sqrt(count) (+inf untried)
// Bounds, with t = total (or the horizon) and scale s = 1 (reward) or 2 (residual):
//   ucb1:      rad = s * sqrt(alpha * log(max(t, 2))) * inv_sqrt
//   hoeffding: rad = s * sqrt(log(2 K T / delta) / 2) * inv_sqrt          (T = horizon or max(t,2))
//   bernstein: rad = sqrt(2 Var L / w) + 7 s L / (3 (w - 1)), L = log(2 K T / delta) (Maurer and
//              Pontil 2009), Var = per-individual variance estimate sum w (x - mean)^2 / (rounds - 1),
//              s^2/4 while rounds < 2, clamped to [0, s^2/4]; infinite for w <= 1.
//   Untried arms (w = 0) have an infinite radius: UCB = +inf, LCB = -inf.
//   L is taken in log space where 2 K T / delta overflows float64 (the bounds stay finite).
// Counts are float64 sums of weights (exact integers below 2^53); an update whose weight would
// make a learner's total overflow float64 is rejected (error code 4), state unchanged.
// Rules (lowest index on ties):
//   ofs:  F = {k : LCB_h[k, j] <= 0 for all j}; F not empty: argmax_F UCB_r; else
//         argmin_k sum_j max(0, LCB_h[k, j]).
//   ucb:  argmax_k UCB_r.
//   primal_dual: argmax_k UCB_r[k] - sum_j lambda_j mean_h[k, j]; after each update
//         lambda_j <- max(0, lambda_j + eta h_j).
//   fixed: a given arm (fused episodes only).
#pragma once

#include <cmath>
#include <cstdint>

#include "common.h"

namespace fk {

enum class BoundKind : int { kUcb1 = 0, kHoeffding = 1, kBernstein = 2 };
enum class SelectRule : int { kOfs = 0, kUcb = 1, kPrimalDual = 2, kFixed = 3 };

struct BoundOptions {
  BoundKind kind = BoundKind::kUcb1;
  double alpha = 2.0;
  double delta = 0.05;
  double horizon = 0.0;  // total individuals T; <= 0: anytime (individuals seen so far)
};

struct BanditState {
  int64_t n_learners = 0;
  int64_t n_arms = 0;
  int64_t n_constraints = 0;
  double* count = nullptr;
  double* rounds = nullptr;
  double* total = nullptr;
  double* sum = nullptr;
  double* sumsq = nullptr;
  double* mean = nullptr;
  double* inv_sqrt = nullptr;
};

struct UpdateArgs {
  const int64_t* arms = nullptr;       // [B]
  const double* rewards = nullptr;     // [B], in [0, 1]
  const double* residuals = nullptr;   // [B, M], in [-1, 1]; nullptr when M == 0
  const double* weights = nullptr;     // [B] or nullptr: then every observation has `weight`
  double weight = 1.0;
  double* lambdas = nullptr;           // [B, M] or nullptr: primal-dual multipliers to update
  const double* eta = nullptr;         // [B] step sizes (with lambdas)
  int64_t* status = nullptr;           // CUDA only: [2] = (error code, first bad learner)
};

struct SelectArgs {
  SelectRule rule = SelectRule::kOfs;
  BoundOptions bound;
  const double* lambdas = nullptr;  // [B, M] for primal_dual
  int64_t* arms = nullptr;          // [B] out
  double* ucb = nullptr;            // [B, K] optional out: UCB of the reward
  double* lcb = nullptr;            // [B, M, K] optional out: LCB of the residuals
};

// A closed-loop environment reduced to one table (see fairkernels.bandits.EnvTable): per
// group g (0 = a, 1 = b) and table column c (a threshold of the grid), the acceptance rate and
// the share of positives among the accepted.  Arm k accepts group g at column col_g(k):
// shared thresholds (columns == nullptr) use column k for both groups; per-group thresholds
// give each arm a pair of columns, columns[g * n_arms + k] (e.g. the product grid
// k = k_a * C + k_b of a C-column table, K = C^2 arms).  A round draws N_a ~ Bin(n, p_t), then
// per group accepted ~ Bin(N_g, accept[g, col_g(k)]) and true positives ~ Bin(accepted,
// precision[g, col_g(k)]): five Binomial draws, the same joint law of (N_a, accepted per
// group, TP, FP) as drawing the n individuals.
struct EnvTable {
  int64_t n_arms = 0;                 // K
  int64_t n_columns = 0;              // C, table width; 0: C = K (shared thresholds)
  const int64_t* columns = nullptr;   // [2, K] column of each arm per group; nullptr: column k
  const double* accept = nullptr;     // [2, C] P(s >= tau_c | g)
  const double* precision = nullptr;  // [2, C] P(y = 1 | s >= tau_c, g) (0 where nobody is accepted)
  double p0 = 0.5;       // group-a share without feedback
  double beta = 0.05;
  double kappa = 4.0;
  int64_t cohort = 2000;  // n
  double cost = 1.0;      // c
  double eps = 0.1;       // DP tolerance
  bool service = false;   // add the service-rate residual rho_min - A
  double rho_min = 0.0;
};

struct EpisodeArgs {
  int64_t n_learners = 0;
  int64_t n_rounds = 0;
  int64_t n_buckets = 1;
  uint64_t seed = 0;
  const int64_t* stream_ids = nullptr;  // [B] Philox stream of each learner (with the seed)
  const int64_t* rules = nullptr;       // [B] SelectRule codes
  const int64_t* fixed_arms = nullptr;  // [B] arm of the fixed rule
  const double* eta = nullptr;          // [B] primal-dual step size
  BoundOptions bound;                   // horizon <= 0: n_rounds * cohort
  // outputs
  double* reward_trace = nullptr;     // [B, NB] sum of rewards over the rounds of each bucket
  double* violation_trace = nullptr;  // [B, NB] sum of sum_j max(0, h_j)
  double* residual_trace = nullptr;   // [B, NB, M] sum of h_j
  double* pulls = nullptr;            // [B, K] rounds spent on each arm (K = env.n_arms)
  double* final_share = nullptr;      // [B] group-a share p_T after the last round
};

// Argument checks that need no array contents; throw std::invalid_argument.  Inline: the CUDA
// module uses it too and does not link bandits.cc.
inline void check_bound_options(const BoundOptions& o) {
  require(o.kind == BoundKind::kUcb1 || o.kind == BoundKind::kHoeffding || o.kind == BoundKind::kBernstein,
          "bound must be ucb1, hoeffding or bernstein");
  require(std::isfinite(o.alpha) && o.alpha > 0, "alpha must be finite and > 0");
  require(std::isfinite(o.delta) && o.delta > 0 && o.delta < 1, "delta must be in (0, 1)");
  require(std::isfinite(o.horizon) && o.horizon >= 0, "horizon must be finite and >= 0");
}
// Reads the table (host memory): CPU only.
void check_env_table(const EnvTable& env);

// CPU implementations (bandits.cc); deterministic whatever the thread count.
void bandit_update_cpu(const BanditState& s, const UpdateArgs& a);
void bandit_select_cpu(const BanditState& s, const SelectArgs& a);
void bandit_episode_cpu(const EnvTable& env, const EpisodeArgs& a);

// CUDA implementations (../cuda/bandits.cu): on the given stream, no device synchronisation.
// The update validates on the device and writes a nonzero status instead of throwing.
void bandit_update_cuda(const BanditState& s, const UpdateArgs& a, int device, uintptr_t stream);
void bandit_select_cuda(const BanditState& s, const SelectArgs& a, int device, uintptr_t stream);
void bandit_episode_cuda(const EnvTable& env, const EpisodeArgs& a, int device, uintptr_t stream);

}  // namespace fk
