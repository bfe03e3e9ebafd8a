"""Optional packages (the extras of ``pyproject.toml``): one way to import them, failing with the install hint.

``optional_import("ray", extra="ray", purpose="--executor ray")`` returns the module, or raises a one-line
:class:`~medtransfer.errors.UserError` (exit code 2) that names the missing package and the command that installs
it. MONAI's ``monai.utils.optional_import`` returns a placeholder that fails on first use instead; a missing extra
here must fail before anything is written, so the import is eager and the error is ours.

Example:
    >>> optional_import("math", extra="dev", purpose="a doctest").pi > 3
    True
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from medtransfer.errors import UserError


def install_hint(extra: str) -> str:
    """The command that installs an extra."""
    return f"pip install -e '.[{extra}]' (or: make setup EXTRAS=dev,{extra})"


def optional_import(module: str, *, extra: str, purpose: str, also: tuple[str, ...] = ()) -> ModuleType:
    """Import ``module`` (and the modules in ``also`` that it needs at run time) or raise :class:`UserError`:
    ``{purpose} needs {package}, which is not installed: {install hint}``."""
    for name in (module, *also):
        try:
            imported = importlib.import_module(name)
        except ImportError as err:
            missing = err.name or name
            raise UserError(f"{purpose} needs {missing}, which is not installed: {install_hint(extra)}") from None
        if name == module:
            found = imported
    return found


def available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
