// Translation of the Python-side argument dict into the advantage kernel's contract;
// shared by the CPU module (advantage_binding.cc) and the CUDA module.
#pragma once

#include <utility>

#include "advantage.h"
#include "binding_util.h"

namespace fk {

inline std::pair<AdvantageArrays, AdvantageOptions> advantage_call_from_dict(const py::dict& args) {
  AdvantageArrays a;
  a.rewards = get_pointer<const void>(args, "rewards");
  a.group_ids = get_pointer<const int64_t>(args, "group_ids");
  a.seq_logp = get_pointer<const void>(args, "seq_logp");
  a.token_logp = get_pointer<const void>(args, "token_logp");
  a.mask = get_pointer<const void>(args, "mask");
  a.out = get_pointer<void>(args, "out");
  a.row_has_signal = get_pointer<bool>(args, "row_has_signal");
  a.out_dtype = get_dtype(args, "out_dtype");
  a.logp_dtype = get_dtype(args, "logp_dtype");
  a.mask_dtype = get_dtype(args, "mask_dtype");

  AdvantageOptions o;
  o.n_rows = get_arg<int64_t>(args, "n_rows");
  o.group_size = get_arg<int64_t>(args, "group_size");
  o.likelihood = static_cast<Likelihood>(get_arg<int>(args, "likelihood"));
  o.beta_rank = get_arg<double>(args, "beta_rank");
  o.ties_average = get_arg<bool>(args, "ties_average");
  o.baseline_loo = get_arg<bool>(args, "baseline_loo");
  o.scale = static_cast<Scale>(get_arg<int>(args, "scale"));
  o.unbiased = get_arg<bool>(args, "unbiased");
  o.eps = get_arg<double>(args, "eps");
  o.singleton_raw = get_arg<bool>(args, "singleton_raw");
  o.n_tokens = get_arg<int64_t>(args, "n_tokens");
  o.logp_row_stride = get_arg<int64_t>(args, "logp_row_stride");
  o.mask_row_stride = get_arg<int64_t>(args, "mask_row_stride");
  o.out_row_stride = get_arg<int64_t>(args, "out_row_stride");
  o.streaming_stores = get_arg<bool>(args, "streaming_stores");
  return {a, o};
}

}  // namespace fk
