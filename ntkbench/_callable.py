"""Modules that are also functions: ``ntkbench.sweep`` and ``ntkbench.train``.

``nb.sweep`` and ``nb.train`` are the package's two main functions, and ``ntkbench.sweep``
and ``ntkbench.train`` are the modules that hold them (with ``live_cube``, ``Recorder`` and
the rest). Python's import system sets a submodule as an attribute of its package once it
is imported (``import ntkbench.sweep`` ends with ``setattr(ntkbench, "sweep", <module>)``),
so a plain function exported as ``nb.sweep`` would be replaced by the module the first time
anything imports ``ntkbench.sweep``, and ``nb.sweep(config, out)`` would then raise
``TypeError: 'module' object is not callable``, depending on import order.

Here the two modules are callable instead: :func:`make_callable` gives the module a class
whose ``__call__`` is the module's function of the same name (assigning a module's
``__class__`` is the customisation the Python data model documents under "Customizing module
attribute access"), and ``ntkbench``'s lazy export of ``sweep`` and ``train`` returns the
module itself. So ``nb.sweep`` is one object whatever was imported before, and each of these
does what it says::

    nb.sweep(config, out)                  # the function (through the module's __call__)
    from ntkbench.sweep import sweep       # the function itself
    import ntkbench.sweep as sw; sw.live_cube(config, out)
    inspect.signature(nb.sweep)            # the function's signature

The call looks the function up on the module at each call, so a test that replaces
``ntkbench.sweep.sweep`` replaces what ``nb.sweep(...)`` runs too.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

__all__ = ["CallableModule", "make_callable"]


class CallableModule(types.ModuleType):
    """A module that, called, calls its function named like the module's last name part."""

    @property
    def _function_name(self) -> str:
        return self.__name__.rpartition(".")[2]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self._function_name)(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:  # read by inspect.signature(module)
        return inspect.signature(getattr(self, self._function_name))


def make_callable(module_name: str) -> None:
    """Make the module ``module_name`` (already in ``sys.modules``) callable as its function.

    Call it at the end of the module's ``__init__``; the module must define a function named
    like its last name part (``ntkbench.sweep`` → ``sweep``).
    """
    module = sys.modules[module_name]
    function = getattr(module, module_name.rpartition(".")[2], None)
    if not callable(function):
        raise TypeError(f"{module_name} has no function {module_name.rpartition('.')[2]!r} to call")
    module.__class__ = CallableModule
