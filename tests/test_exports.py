"""The public surface: __all__ lists, the twin modules' parity, the stub."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

import quicdist
from quicdist import _fastpath_py, errors, terms

from .conftest import COMPILED


ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_all_names_exist():
    for module in (quicdist, errors, terms, quicdist.etf, _fastpath_py):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_package_reexports_every_term_type():
    assert set(terms.__all__) <= set(quicdist.__all__)


@pytest.mark.skipif(COMPILED is None, reason="extension not built")
def test_compiled_and_pure_modules_have_the_same_api():
    assert sorted(COMPILED.__all__) == sorted(_fastpath_py.__all__)
    for name in _fastpath_py.__all__:
        assert callable(getattr(COMPILED, name))


def test_stub_lists_the_same_names():
    stub = ast.parse((ROOT / "quicdist" / "_fastpath.pyi").read_text())
    defined = {node.name for node in stub.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    assert defined == set(_fastpath_py.__all__)


def test_env_var_forces_the_pure_path():
    code = "import quicdist, sys; sys.stdout.write(str(quicdist.USING_EXTENSION))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"QUICDIST_NO_EXTENSIONS": "1", "PATH": ""}, cwd=ROOT, timeout=60)
    assert out.stdout == "False", out.stderr


@pytest.mark.skipif(COMPILED is None, reason="extension not built")
def test_default_import_uses_the_extension_when_built():
    code = ("import quicdist, quicdist._fastpath as f, sys; "
            "sys.stdout.write(str(quicdist.USING_EXTENSION and quicdist.encode is f.encode))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PATH": ""}, cwd=ROOT, timeout=60)
    assert out.stdout == "True", out.stderr


def test_conflicting_env_vars_are_refused():
    out = subprocess.run([sys.executable, "-c", "import quicdist"], capture_output=True, text=True,
                         env={"QUICDIST_NO_EXTENSIONS": "1", "QUICDIST_REQUIRE_EXTENSIONS": "1"},
                         cwd=ROOT, timeout=60)
    assert out.returncode != 0 and "both set" in out.stderr


def test_cli_version():
    out = subprocess.run([sys.executable, "-m", "quicdist", "version"], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith(f"quicdist {quicdist.__version__}")
