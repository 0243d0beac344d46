"""Choose the Cython fast path or its pure-Python twin, once, at import.

``QUICDIST_NO_EXTENSIONS=1`` forces the pure-Python twin;
``QUICDIST_REQUIRE_EXTENSIONS=1`` makes a missing or broken extension an
ImportError instead of a silent fallback. ``USING_EXTENSION`` tells which one
is active (tests, benchmarks and logs print it).

Everything the fast path provides is chosen here together, from one module:
the term codec (``encode``, ``decode``, ``decode_from``), the distribution
framing (``pack_frame``, ``pack_frames``, ``FrameDecoder``, ``TICK``,
``DEFAULT_MAX_FRAME_SIZE``) and the send scheduler (``SendScheduler``).
"""

from __future__ import annotations

import os
import sys


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS: bool = _flag("QUICDIST_NO_EXTENSIONS") or sys.implementation.name != "cpython"
REQUIRE_EXTENSIONS: bool = _flag("QUICDIST_REQUIRE_EXTENSIONS")

if NO_EXTENSIONS and REQUIRE_EXTENSIONS:
    raise ImportError(
        "QUICDIST_NO_EXTENSIONS and QUICDIST_REQUIRE_EXTENSIONS are both set; unset one"
    )

USING_EXTENSION: bool = False
if not NO_EXTENSIONS:
    try:
        from ._fastpath import (
            DEFAULT_MAX_FRAME_SIZE,
            TICK,
            FrameDecoder,
            SendScheduler,
            decode,
            decode_from,
            encode,
            pack_frame,
            pack_frames,
        )

        USING_EXTENSION = True
    except ImportError as exc:
        if REQUIRE_EXTENSIONS:
            raise ImportError(
                "QUICDIST_REQUIRE_EXTENSIONS is set but the compiled quicdist._fastpath "
                f"cannot be imported ({exc}); build it with `pip install .` or "
                "`python setup.py build_ext --inplace`"
            ) from exc

if not USING_EXTENSION:
    # For the type checker the names are the compiled module's (_fastpath.pyi);
    # the twin's classes have the same API (tests/test_exports.py and the
    # differential tests hold them together) but are other classes to mypy.
    from ._fastpath_py import (  # type: ignore[assignment]
        DEFAULT_MAX_FRAME_SIZE,
        TICK,
        FrameDecoder,
        SendScheduler,
        decode,
        decode_from,
        encode,
        pack_frame,
        pack_frames,
    )

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "NO_EXTENSIONS",
    "TICK",
    "USING_EXTENSION",
    "FrameDecoder",
    "SendScheduler",
    "decode",
    "decode_from",
    "encode",
    "pack_frame",
    "pack_frames",
]
