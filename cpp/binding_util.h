// Helpers shared by the pybind11 modules of the CPU core and of the CUDA core.
//
// The kernels' argument structs (advantage.h, propensity.h, bandits.h) are bound once, as typed
// Python classes, by the CPU module _core; the CUDA module imports _core and takes the same
// classes, so no field name or enum code is written twice and a misspelt field is an
// AttributeError at once.  Arrays cross the boundary as raw addresses (uintptr_t); the Python
// layer (python/fairkernels/_arrays.py) owns the arrays and keeps them alive during the call.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "common.h"

namespace fk {

namespace py = pybind11;

// A pointer member exposed to Python as an integer address (0 = nullptr).
template <typename Class, typename T>
void def_address(py::class_<Class>& cls, const char* name, T* Class::*member) {
  cls.def_property(
      name, [member](const Class& c) { return reinterpret_cast<uintptr_t>(c.*member); },
      [member](Class& c, uintptr_t address) {
        c.*member = reinterpret_cast<T*>(address);  // NOLINT(performance-no-int-to-ptr)
      });
}

// The struct types of each family, registered in _core (one call each from module.cc).
void bind_common_types(py::module_& m);
void bind_advantage_types(py::module_& m);
void bind_propensity_types(py::module_& m);
void bind_bandits_types(py::module_& m);

}  // namespace fk
