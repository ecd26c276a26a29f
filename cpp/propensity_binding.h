// Translation of the Python-side argument dict into the propensity kernel's contract; shared by
// the CPU module (propensity_binding.cc) and the CUDA module (../cuda/propensity_binding.cc).
#pragma once

#include <utility>

#include "binding_util.h"
#include "propensity.h"

namespace fk {

inline std::pair<PropensityArrays, PropensityOptions> propensity_call_from_dict(const py::dict& args) {
  PropensityArrays a;
  a.logits = get_pointer<const void>(args, "logits");
  a.labels = get_pointer<const void>(args, "labels");
  a.observed = get_pointer<const void>(args, "observed");
  a.propensity = get_pointer<const void>(args, "propensity");
  a.imputed = get_pointer<const void>(args, "imputed");
  a.loss = get_pointer<void>(args, "loss");
  a.grad_scale = get_pointer<void>(args, "grad_scale");
  a.grad_logits = get_pointer<void>(args, "grad_logits");
  a.grad_imputed = get_pointer<void>(args, "grad_imputed");
  a.dtype = get_dtype(args, "dtype");
  a.observed_dtype = get_dtype(args, "observed_dtype");

  PropensityOptions o;
  o.n_rows = get_arg<int64_t>(args, "n_rows");
  o.pairwise = get_arg<bool>(args, "pairwise");
  o.estimator = static_cast<Estimator>(get_arg<int>(args, "estimator"));
  o.reduction = static_cast<Reduction>(get_arg<int>(args, "reduction"));
  o.rho10 = get_arg<double>(args, "rho10");
  o.rho01 = get_arg<double>(args, "rho01");
  o.p_min = get_arg<double>(args, "p_min");
  o.nonnegative = get_arg<bool>(args, "nonnegative");
  o.want_grad = get_arg<bool>(args, "want_grad");
  o.grad_prescale = get_arg<double>(args, "grad_prescale");
  return {a, o};
}

}  // namespace fk
