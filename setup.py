"""Build the Cython fast path; all metadata lives in pyproject.toml.

QUICDIST_NO_EXTENSIONS=1      build no extension (pure-Python install)
QUICDIST_REQUIRE_EXTENSIONS=1 a failed extension build fails the install
otherwise                     the extension is built when possible, and the
                              pure-Python twin is used when it is not
"""

import os

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


ext_modules = []
if not _flag("QUICDIST_NO_EXTENSIONS"):
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension(
                "quicdist._fastpath",
                ["quicdist/_fastpath.pyx"],
                # Included into _fastpath.pyx: a change to one rebuilds it.
                depends=[
                    "quicdist/_fastpath_framing.pxi",
                    "quicdist/_fastpath_scheduler.pxi",
                ],
                extra_compile_args=["-O2"],
                optional=not _flag("QUICDIST_REQUIRE_EXTENSIONS"),
            )
        ],
        compiler_directives={"language_level": "3", "embedsignature": True},
    )

setup(ext_modules=ext_modules)
