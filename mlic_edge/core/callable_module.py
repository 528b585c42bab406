"""A stage package that is also its own one-call function.

`mlic_edge.export(...)`, `mlic_edge.train(...)` and `mlic_edge.parity(...)` are the library's
one-call API, while `mlic_edge.export`, `mlic_edge.train` and `mlic_edge.parity` are also the
packages that hold those stages. Python sets a package as an attribute of its parent when it is
imported, so a plain function of the same name would be replaced by the module at the first
`import mlic_edge.export.x`. Making the module callable keeps both meanings, whatever was
imported first.
"""
from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, target: str) -> None:
    """Calling module `module_name` calls `target` ("module.path:function"), imported on the
    first call so that importing the package stays cheap."""
    module_path, function_name = target.split(":")

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            function = getattr(importlib.import_module(module_path), function_name)
            return function(*args, **kwargs)

    CallableModule.__call__.__doc__ = f"Same as `{module_path}.{function_name}(...)`."
    sys.modules[module_name].__class__ = CallableModule
