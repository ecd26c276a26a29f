# The compiled module: its classes and enums are bound by pybind11 (cpp/*_binding.cc,
# cuda/*_binding.cc) and typed there; for mypy every attribute is Any.
from typing import Any

def __getattr__(name: str) -> Any: ...
