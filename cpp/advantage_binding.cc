// pybind11 glue of the advantage family: its argument types (shared with the CUDA module) and
// the CPU kernel.
#include "advantage.h"
#include "binding_util.h"

namespace fk {

void bind_advantage_types(py::module_& m) {
  py::enum_<Likelihood>(m, "Likelihood", "Where the rank reweighting reads the likelihood.")
      .value("none", Likelihood::kNone)
      .value("sequence", Likelihood::kSequence)
      .value("mean", Likelihood::kTokenMean)
      .value("sum", Likelihood::kTokenSum);
  py::enum_<Scale>(m, "Scale", "The std an advantage is divided by.")
      .value("group", Scale::kGroup)
      .value("batch", Scale::kBatch)
      .value("none", Scale::kNone);
  py::enum_<MultiReward>(m, "MultiReward", "How several rewards per row become one advantage.")
      .value("sum_then_normalize", MultiReward::kSumThenNormalize)
      .value("normalize_then_sum", MultiReward::kNormalizeThenSum);

  py::class_<AdvantageOptions> options(m, "AdvantageOptions", "fk::AdvantageOptions (cpp/advantage.h).");
  options.def(py::init<>())
      .def(py::init<const AdvantageOptions&>(), py::arg("other"), "A copy (of a validated option set).")
      .def_readwrite("n_rows", &AdvantageOptions::n_rows)
      .def_readwrite("group_size", &AdvantageOptions::group_size)
      .def_readwrite("likelihood", &AdvantageOptions::likelihood)
      .def_readwrite("beta_rank", &AdvantageOptions::beta_rank)
      .def_readwrite("ties_average", &AdvantageOptions::ties_average)
      .def_readwrite("baseline_loo", &AdvantageOptions::baseline_loo)
      .def_readwrite("scale", &AdvantageOptions::scale)
      .def_readwrite("unbiased", &AdvantageOptions::unbiased)
      .def_readwrite("eps", &AdvantageOptions::eps)
      .def_readwrite("singleton_raw", &AdvantageOptions::singleton_raw)
      .def_readwrite("pass_k", &AdvantageOptions::pass_k)
      .def_readwrite("signal_tol", &AdvantageOptions::signal_tol)
      .def_readwrite("nan_missing", &AdvantageOptions::nan_missing)
      .def_readwrite("n_rewards", &AdvantageOptions::n_rewards)
      .def_readwrite("multi_reward", &AdvantageOptions::multi_reward)
      .def_readwrite("n_tokens", &AdvantageOptions::n_tokens)
      .def_readwrite("logp_row_stride", &AdvantageOptions::logp_row_stride)
      .def_readwrite("mask_row_stride", &AdvantageOptions::mask_row_stride)
      .def_readwrite("out_row_stride", &AdvantageOptions::out_row_stride)
      .def_readwrite("streaming_stores", &AdvantageOptions::streaming_stores);

  py::class_<AdvantageArrays> arrays(m, "AdvantageArrays", "fk::AdvantageArrays (cpp/advantage.h).");
  arrays.def(py::init<>())
      .def_readwrite("out_dtype", &AdvantageArrays::out_dtype)
      .def_readwrite("logp_dtype", &AdvantageArrays::logp_dtype)
      .def_readwrite("mask_dtype", &AdvantageArrays::mask_dtype);
  def_address(arrays, "rewards", &AdvantageArrays::rewards);
  def_address(arrays, "reward_weights", &AdvantageArrays::reward_weights);
  def_address(arrays, "group_ids", &AdvantageArrays::group_ids);
  def_address(arrays, "seq_logp", &AdvantageArrays::seq_logp);
  def_address(arrays, "token_logp", &AdvantageArrays::token_logp);
  def_address(arrays, "mask", &AdvantageArrays::mask);
  def_address(arrays, "out", &AdvantageArrays::out);
  def_address(arrays, "row_has_signal", &AdvantageArrays::row_has_signal);
}

void bind_advantage(py::module_& m) {
  m.def(
      "group_advantages",
      [](AdvantageArrays arrays, AdvantageOptions options) {  // copies: the GIL is released
        py::gil_scoped_release no_gil;
        group_advantages_cpu(arrays, options);
      },
      py::arg("arrays"), py::arg("options"), "Group-relative advantages (see fairkernels.group_advantages).");
}

}  // namespace fk
