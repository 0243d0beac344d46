"""Shared fixtures.

The whole suite runs twice under `make test`: once with
QUICDIST_REQUIRE_EXTENSIONS=1 (the public API is the Cython fast path) and
once with QUICDIST_NO_EXTENSIONS=1 (the pure-Python twin). Tests that compare
the two implementations directly use the `fastpath` fixture, which yields
each available module in turn.
"""

from __future__ import annotations

import importlib
import os
import threading

import pytest

from quicdist import _accel
from quicdist.sync.utils import open_fd_count
from tests.node_fixtures import TIMEOUT


def _compiled():
    try:
        return importlib.import_module("quicdist._fastpath")
    except ImportError:
        return None


COMPILED = _compiled()
PURE = importlib.import_module("quicdist._fastpath_py")


@pytest.fixture(
    params=[
        pytest.param("cython", marks=pytest.mark.skipif(COMPILED is None,
                                                        reason="extension not built")),
        "python",
    ]
)
def fastpath(request):
    """Each implementation of the fast-path API: the compiled one and the pure twin."""
    return COMPILED if request.param == "cython" else PURE


def pytest_report_header(config):
    return (f"quicdist fast path: {'cython' if _accel.USING_EXTENSION else 'pure python'} "
            f"(QUICDIST_NO_EXTENSIONS={os.environ.get('QUICDIST_NO_EXTENSIONS', '')!r}, "
            f"QUICDIST_REQUIRE_EXTENSIONS={os.environ.get('QUICDIST_REQUIRE_EXTENSIONS', '')!r})")


@pytest.fixture
def no_leaks():
    """No thread or file descriptor of this process outlives the test (the
    threads it started get TIMEOUT seconds to end)."""
    before, fds = set(threading.enumerate()), open_fd_count()
    yield
    leftover = [t for t in threading.enumerate() if t not in before]
    for thread in leftover:
        thread.join(TIMEOUT)
    assert not [t for t in leftover if t.is_alive()], "threads survived the test"
    assert open_fd_count() == fds, "file descriptors leaked"
