"""Build configuration beyond pyproject.toml: the optional compiled request-path kernels.

``guarded_serving._native`` (``guarded_serving/_native.c``, CPython API only, no NumPy headers) speeds up
the one-row edge-case verdict and the input range check. It is optional: without a C compiler the build
skips it and the package uses its NumPy paths (``guarded_serving.native.AVAILABLE`` says which).
"""

import sys

from setuptools import Extension, setup

# no fused multiply-adds: the kernels round as NumPy does (x * scale + shift in two steps)
ARGS = [] if sys.platform == "win32" else ["-O2", "-fno-fast-math", "-ffp-contract=off"]

setup(ext_modules=[Extension("guarded_serving._native", ["guarded_serving/_native.c"], optional=True,
                             extra_compile_args=ARGS)])
