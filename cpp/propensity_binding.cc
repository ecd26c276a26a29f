// pybind11 glue of the propensity family: its argument types (shared with the CUDA module) and
// the CPU kernel.
#include "binding_util.h"
#include "propensity.h"

namespace fk {

void bind_propensity_types(py::module_& m) {
  py::enum_<Estimator>(m, "Estimator", "How the observed rows are weighted.")
      .value("naive", Estimator::kNaive)
      .value("ips", Estimator::kIps)
      .value("snips", Estimator::kSnips)
      .value("dr", Estimator::kDr)
      .value("sndr", Estimator::kSndr)
      .value("switch_dr", Estimator::kSwitchDr)
      .value("dros", Estimator::kDros)
      .value("sg_ips", Estimator::kSgIps)
      .value("sg_dr", Estimator::kSgDr)
      .value("dr_jl", Estimator::kDrJl)
      .value("mrdr", Estimator::kMrdr);
  py::enum_<Reduction>(m, "Reduction", "How the row terms are reduced.")
      .value("mean", Reduction::kMean)
      .value("sum", Reduction::kSum)
      .value("none", Reduction::kNone);

  py::enum_<LossKind>(m, "LossKind", "How the row loss is formed.")
      .value("surrogate", LossKind::kSurrogate)
      .value("forward", LossKind::kForward)
      .value("mse", LossKind::kMse);
  py::enum_<NonNegative>(m, "NonNegative", "How the reduced loss is kept non-negative.")
      .value("off", NonNegative::kOff)
      .value("total", NonNegative::kTotal)
      .value("classwise", NonNegative::kClasswise);
  m.attr("PROPENSITY_DIAGNOSTICS") = py::make_tuple("ess", "clipped_share", "risk1", "risk0");
  m.attr("PROPENSITY_DIAGNOSTICS_SIZE") = static_cast<int>(kDiagnostics);

  py::class_<PropensityOptions> options(m, "PropensityOptions", "fk::PropensityOptions (cpp/propensity.h).");
  options.def(py::init<>())
      .def_readwrite("n_rows", &PropensityOptions::n_rows)
      .def_readwrite("pairwise", &PropensityOptions::pairwise)
      .def_readwrite("estimator", &PropensityOptions::estimator)
      .def_readwrite("reduction", &PropensityOptions::reduction)
      .def_readwrite("rho10", &PropensityOptions::rho10)
      .def_readwrite("rho01", &PropensityOptions::rho01)
      .def_readwrite("p_min", &PropensityOptions::p_min)
      .def_readwrite("loss", &PropensityOptions::loss)
      .def_readwrite("nn_beta", &PropensityOptions::nn_beta)
      .def_readwrite("nn_gamma", &PropensityOptions::nn_gamma)
      .def_readwrite("nonnegative", &PropensityOptions::nonnegative)
      .def_readwrite("want_grad", &PropensityOptions::want_grad)
      .def_readwrite("grad_prescale", &PropensityOptions::grad_prescale)
      .def_readwrite("tau", &PropensityOptions::tau)
      .def_readwrite("lambda_", &PropensityOptions::lambda_);

  py::class_<PropensityArrays> arrays(m, "PropensityArrays", "fk::PropensityArrays (cpp/propensity.h).");
  arrays.def(py::init<>())
      .def_readwrite("dtype", &PropensityArrays::dtype)
      .def_readwrite("observed_dtype", &PropensityArrays::observed_dtype);
  def_address(arrays, "logits", &PropensityArrays::logits);
  def_address(arrays, "labels", &PropensityArrays::labels);
  def_address(arrays, "observed", &PropensityArrays::observed);
  def_address(arrays, "propensity", &PropensityArrays::propensity);
  def_address(arrays, "imputed", &PropensityArrays::imputed);
  def_address(arrays, "loss", &PropensityArrays::loss);
  def_address(arrays, "grad_scale", &PropensityArrays::grad_scale);
  def_address(arrays, "grad_logits", &PropensityArrays::grad_logits);
  def_address(arrays, "grad_imputed", &PropensityArrays::grad_imputed);
  def_address(arrays, "diagnostics", &PropensityArrays::diagnostics);
}

void bind_propensity(py::module_& m) {
  m.def(
      "propensity_loss",
      [](PropensityArrays arrays, PropensityOptions options) {  // copies: the GIL is released
        py::gil_scoped_release no_gil;
        propensity_loss_cpu(arrays, options);
      },
      py::arg("arrays"), py::arg("options"), "Propensity-weighted, noise-aware loss (see fairkernels.propensity_loss).");
}

}  // namespace fk
