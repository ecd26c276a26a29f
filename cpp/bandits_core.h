// Per-learner arithmetic of the bandits family, shared by the CPU (bandits.cc) and CUDA
// (../cuda/bandits.cu) kernels: bounds and selection rules, the update of one observation,
// Philox4x32-10, binomial draws and one closed-loop round.  Everything is inline and
// __host__ __device__, so both backends run the same operations in the same order.
//
// Arrays of one learner are addressed as base[i * stride]: stride 1 on the CPU (the learner's
// own contiguous block), stride B on the GPU for the fused episode (coalesced across threads).
// Additions and multiplications on accumulators go through add()/mul(), which on the device
// are the non-contracting intrinsics, so no FMA changes a result between CPU and GPU.
#pragma once

#include <cmath>
#include <cstdint>

#include "bandits.h"

#if defined(__CUDACC__)
#define FK_HD __host__ __device__ __forceinline__
#else
#define FK_HD inline
#endif

namespace fk {
namespace bandits {

FK_HD double add(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
FK_HD double mul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
FK_HD double infinity() { return HUGE_VAL; }

// ------------------------------------------------------------------------------------------
// Philox4x32-10 (Salmon et al. 2011).  Counter = (i, round, stream_lo, stream_hi), key = seed:
// one independent stream per (learner stream id, seed) and round.

FK_HD void philox4x32_10(uint32_t ctr[4], uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * ctr[0];
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * ctr[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t c1 = ctr[1], c3 = ctr[3];
    ctr[0] = hi1 ^ c1 ^ k0;
    ctr[1] = lo1;
    ctr[2] = hi0 ^ c3 ^ k1;
    ctr[3] = lo0;
  }
}

// Uniform doubles in (0, 1) with 53 random bits, two per Philox block.
struct RoundStream {
  uint32_t key0, key1;
  uint32_t round, stream_lo, stream_hi;
  uint32_t block = 0;
  uint32_t words[4];
  int next = 4;

  FK_HD RoundStream(uint64_t seed, uint64_t stream, uint64_t t)
      : key0(static_cast<uint32_t>(seed)),
        key1(static_cast<uint32_t>(seed >> 32)),
        round(static_cast<uint32_t>(t)),
        stream_lo(static_cast<uint32_t>(stream)),
        stream_hi(static_cast<uint32_t>(stream >> 32)) {}

  FK_HD double uniform() {
    if (next >= 4) {
      words[0] = block++;
      words[1] = round;
      words[2] = stream_lo;
      words[3] = stream_hi;
      philox4x32_10(words, key0, key1);
      next = 0;
    }
    const uint64_t a = words[next] >> 5, b = words[next + 1] >> 6;
    next += 2;
    return (static_cast<double>(a * 67108864ull + b) + 0.5) * (1.0 / 9007199254740992.0);
  }
};

// ------------------------------------------------------------------------------------------
// Binomial(n, p): inversion by geometric sums for n p < 10, else Hormann's BTRS (1993), as in
// PyTorch's sampler; exact in distribution, O(1) expected uniforms.

FK_HD double stirling_tail(double k) {
  if (k <= 9) {
    const double table[10] = {0.0810614667953272,  0.0413406959554092,  0.0276779256849983, 0.02079067210376509,
                              0.0166446911898211,  0.0138761288230707,  0.0118967099458917, 0.0104112652619720,
                              0.00925546218271273, 0.00833056343336287};
    return table[static_cast<int>(k)];
  }
  const double kp1sq = (k + 1) * (k + 1);
  return (1.0 / 12 - (1.0 / 360 - 1.0 / 1260 / kp1sq) / kp1sq) / (k + 1);
}

FK_HD double binomial_inversion(double n, double p, RoundStream& rng) {
  const double logq = log1p(-p);
  double geom_sum = 0, count = 0;
  while (true) {
    geom_sum += ceil(log(rng.uniform()) / logq);
    if (geom_sum > n) break;
    count += 1;
  }
  return count;
}

FK_HD double binomial_btrs(double n, double p, RoundStream& rng) {
  const double spq = sqrt(mul(mul(n, p), 1 - p));
  const double b = add(1.15, mul(2.53, spq));
  const double a = add(add(-0.0873, mul(0.0248, b)), mul(0.01, p));
  const double c = add(mul(n, p), 0.5);
  const double v_r = 0.92 - 4.2 / b;
  const double r = p / (1 - p);
  const double alpha = mul(add(2.83, 5.1 / b), spq);
  const double m = floor(mul(n + 1, p));
  while (true) {
    const double u = rng.uniform() - 0.5;
    double v = rng.uniform();
    const double us = 0.5 - fabs(u);
    const double k = floor(add(mul(add(2 * a / us, b), u), c));
    if (k < 0 || k > n) continue;
    if (us >= 0.07 && v <= v_r) return k;
    v = log(mul(v, alpha) / add(a / mul(us, us), b));
    const double upper = add(add(add(mul(m + 0.5, log((m + 1) / mul(r, n - m + 1))),
                                     mul(n + 1, log((n - m + 1) / (n - k + 1)))),
                                 add(mul(k + 0.5, log(mul(r, n - k + 1) / (k + 1))),
                                     add(stirling_tail(m), stirling_tail(n - m)))),
                             -add(stirling_tail(k), stirling_tail(n - k)));
    if (v <= upper) return k;
  }
}

FK_HD double binomial(double n, double p, RoundStream& rng) {
  if (n <= 0 || p <= 0) return 0;
  if (p >= 1) return n;
  if (p <= 0.5) return mul(n, p) >= 10 ? binomial_btrs(n, p, rng) : binomial_inversion(n, p, rng);
  const double q = 1 - p;
  return n - (mul(n, q) >= 10 ? binomial_btrs(n, q, rng) : binomial_inversion(n, q, rng));
}

// ------------------------------------------------------------------------------------------
// Bounds and selection for one learner.

struct LearnerView {
  const double* count;     // [K]
  const double* rounds;    // [K]
  const double* sum;       // [V, K]
  const double* sumsq;     // [V, K]
  const double* mean;      // [V, K]
  const double* inv_sqrt;  // [K]
  int64_t stride;          // element stride of all of them
  int64_t K, M;
  FK_HD double at(const double* p, int64_t i) const { return p[i * stride]; }
};

// L = log(2 K T / delta).  Where 2 K T / delta overflows float64 (a huge horizon with a tiny
// delta) it is taken in log space, so the bounds stay finite for every finite option.
FK_HD double confidence_log(int64_t K, double t, double delta) {
  const double x = mul(mul(2.0, static_cast<double>(K)), t) / delta;
  if (x < infinity()) return log(x);
  return add(add(log(mul(2.0, static_cast<double>(K))), log(t)), -log(delta));
}

// The part of the radius shared by every arm: ucb1 / hoeffding factor, or L for Bernstein.
FK_HD double radius_factor(const BoundOptions& o, double total, int64_t K) {
  const double t = o.horizon > 0 ? o.horizon : (total > 2 ? total : 2.0);
  switch (o.kind) {
    case BoundKind::kUcb1: return sqrt(mul(o.alpha, log(total > 2 ? total : 2.0)));
    case BoundKind::kHoeffding: return sqrt(confidence_log(K, t, o.delta) / 2);
    default: return confidence_log(K, t, o.delta);
  }
}

// Radius of value v (0 = reward, scale 1; else residual, scale 2) on arm k.
FK_HD double radius(const LearnerView& L, const BoundOptions& o, double factor, int64_t v, int64_t k) {
  const double w = L.at(L.count, k);
  if (!(w > 0)) return infinity();
  const double scale = v == 0 ? 1.0 : 2.0;
  if (o.kind != BoundKind::kBernstein) return mul(scale, mul(factor, L.at(L.inv_sqrt, k)));
  if (!(w > 1)) return infinity();
  const double n_obs = L.at(L.rounds, k);
  const double max_var = mul(scale, scale) / 4;
  double var = max_var;
  if (n_obs >= 2) {
    const double mu = L.at(L.mean, v * L.K + k);
    var = add(L.at(L.sumsq, v * L.K + k), -mul(w, mul(mu, mu))) / (n_obs - 1);
    var = var < 0 ? 0.0 : (var > max_var ? max_var : var);
  }
  return add(sqrt(mul(mul(2.0, var), factor) / w), mul(mul(7.0, scale), factor) / mul(3.0, w - 1));
}

// Fast path of choose_arm for ucb1 / hoeffding without bound outputs: the radius is
// scale * factor * inv_sqrt, computed for blocks of arms in branch-free loops (vectorised on
// the CPU), then scanned in arm order.  Same operations, same results as the general path.
template <bool kUnitStride>
FK_HD int64_t choose_arm_simple(const LearnerView& L, double factor, SelectRule rule, const double* lambdas,
                                int64_t lambda_stride) {
  constexpr int64_t kBlock = 64;
  double rad[kBlock], score[kBlock], violation[kBlock];
  const int64_t stride = kUnitStride ? 1 : L.stride;
  int64_t best = 0, best_feasible = -1, least_violating = 0;
  double best_score = -infinity(), best_feasible_ucb = -infinity(), least_violation = infinity();
  for (int64_t k0 = 0; k0 < L.K; k0 += kBlock) {
    const int64_t n = L.K - k0 < kBlock ? L.K - k0 : kBlock;
    const double* inv = L.inv_sqrt + k0 * stride;  // +inf on untried arms, and factor > 0
    const double* mean = L.mean + k0 * stride;
    for (int64_t i = 0; i < n; ++i) {
      rad[i] = mul(factor, inv[i * stride]);
      score[i] = add(mean[i * stride], rad[i]);  // UCB of the reward
    }
    if (rule == SelectRule::kUcb) {
      for (int64_t i = 0; i < n; ++i) {
        if (score[i] > best_score) best_score = score[i], best = k0 + i;
      }
      continue;
    }
    if (rule == SelectRule::kPrimalDual) {
      for (int64_t j = 0; j < L.M; ++j) {
        const double lambda = lambdas[j * lambda_stride];
        const double* mean_j = mean + (1 + j) * L.K * stride;
        for (int64_t i = 0; i < n; ++i) violation[i] = j == 0 ? mul(lambda, mean_j[i * stride])
                                                              : add(violation[i], mul(lambda, mean_j[i * stride]));
      }
      for (int64_t i = 0; i < n; ++i) {
        const double value = L.M > 0 ? add(score[i], -violation[i]) : score[i];
        if (value > best_score) best_score = value, best = k0 + i;
      }
      continue;
    }
    for (int64_t i = 0; i < n; ++i) violation[i] = 0.0;
    for (int64_t j = 0; j < L.M; ++j) {
      const double* mean_j = mean + (1 + j) * L.K * stride;
      for (int64_t i = 0; i < n; ++i) {
        const double lcb = add(mean_j[i * stride], -mul(2.0, rad[i]));
        violation[i] = add(violation[i], lcb > 0 ? lcb : 0.0);
      }
    }
    // Branch-free keys (UCBs are finite or +inf, never -inf); the running extremes change
    // rarely, so the remaining branches predict well.
    for (int64_t i = 0; i < n; ++i) {
      const bool feasible = violation[i] == 0;
      const double ucb = feasible ? score[i] : -infinity();
      const double excess = feasible ? infinity() : violation[i];
      if (ucb > best_feasible_ucb) best_feasible_ucb = ucb, best_feasible = k0 + i;
      if (excess < least_violation) least_violation = excess, least_violating = k0 + i;
    }
  }
  if (rule == SelectRule::kOfs) return best_feasible >= 0 ? best_feasible : least_violating;
  return best;
}

// Chooses an arm; optionally writes UCB_r [K] and LCB_h [M, K] (with out_stride).
FK_HD int64_t choose_arm(const LearnerView& L, const BoundOptions& o, SelectRule rule, double total,
                         const double* lambdas, int64_t lambda_stride, double* ucb_out, double* lcb_out,
                         int64_t out_stride) {
  const double factor = radius_factor(o, total, L.K);
  if (o.kind != BoundKind::kBernstein && ucb_out == nullptr && lcb_out == nullptr) {
    return L.stride == 1 ? choose_arm_simple<true>(L, factor, rule, lambdas, lambda_stride)
                         : choose_arm_simple<false>(L, factor, rule, lambdas, lambda_stride);
  }
  int64_t best = 0, best_feasible = -1, least_violating = 0;
  double best_score = -infinity(), best_feasible_ucb = -infinity(), least_violation = infinity();
  for (int64_t k = 0; k < L.K; ++k) {
    const double ucb = add(L.at(L.mean, k), radius(L, o, factor, 0, k));
    if (ucb_out != nullptr) ucb_out[k * out_stride] = ucb;
    if (rule == SelectRule::kUcb) {
      if (ucb > best_score) best_score = ucb, best = k;
      continue;
    }
    if (rule == SelectRule::kPrimalDual) {
      double penalty = 0;
      for (int64_t j = 0; j < L.M; ++j) {
        penalty = add(penalty, mul(lambdas[j * lambda_stride], L.at(L.mean, (1 + j) * L.K + k)));
      }
      const double score = add(ucb, -penalty);
      if (score > best_score) best_score = score, best = k;
      if (lcb_out == nullptr) continue;
    }
    double violation = 0;
    for (int64_t j = 0; j < L.M; ++j) {
      const double lcb = add(L.at(L.mean, (1 + j) * L.K + k), -radius(L, o, factor, 1 + j, k));
      if (lcb_out != nullptr) lcb_out[(j * L.K + k) * out_stride] = lcb;
      if (lcb > 0) violation = add(violation, lcb);
    }
    if (rule != SelectRule::kOfs) continue;
    if (violation == 0) {
      if (best_feasible < 0 || ucb > best_feasible_ucb) best_feasible_ucb = ucb, best_feasible = k;
    } else if (violation < least_violation) {
      least_violation = violation, least_violating = k;
    }
  }
  if (rule == SelectRule::kOfs) return best_feasible >= 0 ? best_feasible : least_violating;
  return best;
}

// ------------------------------------------------------------------------------------------
// Update of one learner with one observation (already validated).

struct LearnerState {
  double* count;
  double* rounds;
  double* sum;
  double* sumsq;
  double* mean;
  double* inv_sqrt;
  int64_t stride;
  int64_t K, V;
  FK_HD double& at(double* p, int64_t i) const { return p[i * stride]; }
};

// One observation: the reward and M = V - 1 residuals (read as residuals[j * residual_stride]).
FK_HD void observe(const LearnerState& S, double* total, int64_t k, double reward, const double* residuals,
                   int64_t residual_stride, double w) {
  const double c = add(S.at(S.count, k), w);
  S.at(S.count, k) = c;
  S.at(S.rounds, k) = add(S.at(S.rounds, k), 1.0);
  *total = add(*total, w);
  S.at(S.inv_sqrt, k) = 1.0 / sqrt(c);
  for (int64_t v = 0; v < S.V; ++v) {
    const double x = v == 0 ? reward : residuals[(v - 1) * residual_stride];
    const int64_t i = v * S.K + k;
    const double sx = add(S.at(S.sum, i), mul(w, x));
    S.at(S.sum, i) = sx;
    S.at(S.sumsq, i) = add(S.at(S.sumsq, i), mul(mul(w, x), x));
    S.at(S.mean, i) = sx / c;
  }
}

// 0 when valid, else an error code: 1 arm, 2 reward, 3 residual, 4 weight (not finite and
// positive, or so large that the learner's total would overflow float64).  Counts are float64
// sums of weights: total >= every count of the learner (rounding is monotone) and |sum| and
// sumsq <= count (|x| <= 1), so a finite total + weight keeps the whole state finite.
FK_HD int check_observation(int64_t arm, int64_t K, double reward, const double* residuals, int64_t M,
                            double weight, double total) {
  if (arm < 0 || arm >= K) return 1;
  if (!(reward >= 0.0 && reward <= 1.0)) return 2;  // also rejects NaN
  for (int64_t j = 0; j < M; ++j) {
    if (!(residuals[j] >= -1.0 && residuals[j] <= 1.0)) return 3;
  }
  if (!(weight > 0.0) || weight == infinity()) return 4;
  if (!(add(total, weight) < infinity())) return 4;
  return 0;
}

FK_HD void update_lambdas(double* lambdas, int64_t lambda_stride, const double* residuals, int64_t residual_stride,
                          int64_t M, double eta) {
  for (int64_t j = 0; j < M; ++j) {
    const double l = add(lambdas[j * lambda_stride], mul(eta, residuals[j * residual_stride]));
    lambdas[j * lambda_stride] = l > 0 ? l : 0.0;
  }
}

// ------------------------------------------------------------------------------------------
// One closed-loop round of the environment table for a learner at arm k.

struct RoundOutcome {
  double reward;
  double residual[2];  // DP, then service rate
  double next_share;
};

FK_HD double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

// Table entry of group g for arm k (see EnvTable): column k when thresholds are shared, else
// the arm's column for that group.
FK_HD int64_t table_index(const EnvTable& env, int g, int64_t k) {
  const int64_t width = env.n_columns > 0 ? env.n_columns : env.n_arms;
  const int64_t column = env.columns != nullptr ? env.columns[g * env.n_arms + k] : k;
  return g * width + column;
}

FK_HD RoundOutcome env_round(const EnvTable& env, int64_t k, double share, RoundStream& rng) {
  const double n = static_cast<double>(env.cohort);
  double group_n[2];
  group_n[0] = binomial(n, share, rng);
  group_n[1] = n - group_n[0];
  double accepted_rate[2], tp = 0, fp = 0;
  for (int g = 0; g < 2; ++g) {
    const int64_t cell = table_index(env, g, k);
    const double accepted = binomial(group_n[g], env.accept[cell], rng);
    const double tp_g = binomial(accepted, env.precision[cell], rng);
    accepted_rate[g] = group_n[g] > 0 ? accepted / group_n[g] : 0.0;
    tp += tp_g;
    fp += accepted - tp_g;
  }
  RoundOutcome out;
  out.reward = add(add(tp, -mul(env.cost, fp)), mul(env.cost, n)) / mul(1 + env.cost, n);
  const double gap = accepted_rate[0] - accepted_rate[1];
  out.residual[0] = fabs(gap) - env.eps;
  out.residual[1] = env.rho_min - (tp + fp) / n;
  const double logit_p0 = log(env.p0 / (1 - env.p0));
  out.next_share = add(mul(1 - env.beta, share), mul(env.beta, sigmoid(add(logit_p0, mul(env.kappa, gap)))));
  return out;
}

// A whole episode of one learner; state arrays zeroed by the caller, addressed with `stride`.
FK_HD void run_learner(const EnvTable& env, const EpisodeArgs& a, int64_t b, const LearnerState& S, double* lambdas,
                       int64_t B_stride) {
  const int64_t K = S.K, M = S.V - 1, NB = a.n_buckets, T = a.n_rounds;
  const SelectRule rule = static_cast<SelectRule>(a.rules[b]);
  const double eta = a.eta != nullptr ? a.eta[b] : 0.0;
  BoundOptions bound = a.bound;
  if (!(bound.horizon > 0)) bound.horizon = mul(static_cast<double>(T), static_cast<double>(env.cohort));
  const LearnerView view{S.count, S.rounds, S.sum, S.sumsq, S.mean, S.inv_sqrt, S.stride, K, M};
  for (int64_t k = 0; k < K; ++k) S.at(S.inv_sqrt, k) = infinity();  // untried
  double total = 0, share = env.p0;
  const double w = static_cast<double>(env.cohort);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t k = rule == SelectRule::kFixed
                          ? a.fixed_arms[b]
                          : choose_arm(view, bound, rule, total, lambdas, B_stride, nullptr, nullptr, 0);
    RoundStream rng(a.seed, static_cast<uint64_t>(a.stream_ids[b]), static_cast<uint64_t>(t));
    const RoundOutcome o = env_round(env, k, share, rng);
    share = o.next_share;
    if (rule != SelectRule::kFixed) {
      observe(S, &total, k, o.reward, o.residual, 1, w);
      if (rule == SelectRule::kPrimalDual) update_lambdas(lambdas, B_stride, o.residual, 1, M, eta);
    }
    a.pulls[b * K + k] += 1;
    const int64_t bucket = (t * NB) / T;
    a.reward_trace[b * NB + bucket] = add(a.reward_trace[b * NB + bucket], o.reward);
    double violation = 0;
    for (int64_t j = 0; j < M; ++j) {
      if (o.residual[j] > 0) violation = add(violation, o.residual[j]);
      double& r = a.residual_trace[(b * NB + bucket) * M + j];
      r = add(r, o.residual[j]);
    }
    a.violation_trace[b * NB + bucket] = add(a.violation_trace[b * NB + bucket], violation);
  }
  a.final_share[b] = share;
}

}  // namespace bandits
}  // namespace fk
