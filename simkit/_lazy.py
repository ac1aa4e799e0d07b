"""Deferred imports, so ``import simkit`` stays fast (pandas alone takes ~0.3 s to import).

``pandas`` here is a stand-in module object: the real pandas is imported on first attribute
access. Modules use it as ``pd`` at run time and import the real one for type checking.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule(ModuleType):
    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        return getattr(module, attr)


pandas = _LazyModule("pandas")
