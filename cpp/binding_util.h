// Helpers shared by the pybind11 modules of the CPU core and of the CUDA core.
// Arrays cross the boundary as raw addresses (uintptr_t) with dtype codes; the Python layer
// (python/fairkernels/_arrays.py) owns the arrays and keeps them alive during the call.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common.h"

namespace fk {

namespace py = pybind11;

template <typename T>
T get_arg(const py::dict& args, const char* key) {
  if (!args.contains(key)) throw std::invalid_argument(std::string("missing kernel argument: ") + key);
  return args[key].cast<T>();
}

template <typename T>
T* get_pointer(const py::dict& args, const char* key) {
  return reinterpret_cast<T*>(get_arg<uintptr_t>(args, key));
}

inline DType get_dtype(const py::dict& args, const char* key) { return static_cast<DType>(get_arg<int>(args, key)); }

}  // namespace fk
