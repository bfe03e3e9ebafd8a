"""Optional extras come through one import that names the package and the command that installs it."""

from __future__ import annotations

import sys

import pytest

from medtransfer.errors import UserError
from medtransfer.optional import available, install_hint, optional_import


def test_an_installed_package_is_returned():
    assert optional_import("json", extra="dev", purpose="a test").dumps([1]) == "[1]"
    assert available("json") and not available("no_such_package_xyz")


def test_a_missing_package_or_one_it_needs_is_named_with_the_install_command(monkeypatch):
    with pytest.raises(UserError, match=r"--executor ray needs no_such_package_xyz, which is not installed: pip "):
        optional_import("no_such_package_xyz", extra="ray", purpose="--executor ray")
    monkeypatch.setitem(sys.modules, "blocked_dependency", None)  # importing it raises ImportError
    with pytest.raises(UserError, match="needs blocked_dependency") as err:
        optional_import("json", extra="radiomics", purpose="the radiomics baseline", also=("blocked_dependency",))
    assert install_hint("radiomics") in str(err.value)
