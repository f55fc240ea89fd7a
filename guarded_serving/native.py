"""The optional compiled request-path kernels (``guarded_serving/_native.c``), or ``None`` without them.

Built by ``pip install`` when a C compiler is present (an optional extension: the install succeeds
without one). Served, a guarded call starts with cold caches, and each small NumPy call on its path
pays its dispatch cold (a few microseconds each); the kernels do the same arithmetic in one call:

* ``all_within(x, low, high)``: the guard's input range check (every value finite and within the
  plausibility limits of its column);
* ``EdgeKernel``: the one-row edge-case verdict of the default detector (tail + Mahalanobis nulls and the
  conformal rank), built by :meth:`guarded_serving.edge_cases.combined.CombinedDetector.one_row_kernel`;
* ``sr_mixture``: off the request path, the drift thread's conformal test martingale
  (:class:`guarded_serving.drift.sequential.OnlineConformalMartingale`), its brackets updated row by row
  in linear space with a per-column scale instead of NumPy's passes in log space (the same capital up to
  rounding; 13-20 against 30-42 ms per 1,000 rows of 30 features, ``benchmarks/bench_drift.py --only cost``).

``GUARDED_NATIVE=0`` in the environment turns them off (the NumPy paths give the same verdicts; the
tests compare both). :data:`AVAILABLE` says whether they are in use.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["AVAILABLE", "ENV", "kernels"]

ENV = "GUARDED_NATIVE"


def _load() -> ModuleType | None:
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        from . import _native
    except ImportError:  # built without a C compiler, or a platform without the extension
        return None
    return _native


#: The compiled module (``all_within``, ``EdgeKernel``, ``sr_mixture``), or None (not built, or ``GUARDED_NATIVE=0``).
kernels: ModuleType | None = _load()
AVAILABLE = kernels is not None
