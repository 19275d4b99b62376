"""lstmcast: CSV in, trained stacked-LSTM forecaster out, forecasts CSV out.

`train`, `predict`, `evaluate` and `load_run` load on first use (PEP 562 `__getattr__`): they
import torch, and `import lstmcast.data` or `lstmcast --help` should not pay for it.
"""

import importlib
import sys
import types

__version__ = "0.1.0"

from .config import Config, load_config  # noqa: E402
from .errors import LstmcastError  # noqa: E402

# Lazily loaded name -> the submodule that defines it.
_LAZY = {"evaluate": "evaluate", "load_run": "predict", "predict": "predict", "train": "train"}

__all__ = ["Config", "LstmcastError", "evaluate", "load_run", "load_config", "predict", "train",
           "__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    """The package module. Loading a submodule binds it to the package's attribute of its name;
    for train, predict and evaluate that attribute stays the function (`lstmcast.train` is
    `lstmcast.train.train`, as it was when this file imported them eagerly), whichever import
    loads the submodule first."""

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
