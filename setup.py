"""Builds the native core (plain C99, strict warnings) and its one Cython binding."""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

NATIVE = "native"
# The core is compiled on its own with the strict flags; Cython's generated C is not ours to lint.
STRICT = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE"]
core_sources = sorted(glob.glob(os.path.join(NATIVE, "*.c")))
# build_ext relinks only when a listed dependency is newer than the module: list the core.
core_depends = core_sources + sorted(glob.glob(os.path.join(NATIVE, "*.h")))

setup(
    libraries=[("rtkcore", {"sources": core_sources, "include_dirs": [NATIVE], "cflags": STRICT})],
    ext_modules=cythonize(
        [Extension("rtk_qos._core", ["src/rtk_qos/_core.pyx"], include_dirs=[NATIVE],
                   libraries=["rtkcore"], extra_compile_args=["-O2"], depends=core_depends)],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
    ),
)
