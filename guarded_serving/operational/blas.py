"""BLAS threads per serving worker: one each, so workers on a few shared cores do not oversubscribe.

NumPy's OpenBLAS starts a thread pool as large as the machine in *every*
process. With several serving workers on a busy 2-core host, each worker's
pool competes with the others' for the same cores and a parallel BLAS call
waits on threads that are not scheduled: one edge verdict at 1,000 features
took 8 ms instead of 0.24 ms (issue 19), and in ``benchmarks/bench_edge_cost.py``
a 10-row, 1,000-feature verdict took 10.0 ms with OpenBLAS's default 2 threads
on the loaded dev machine against about 1 ms with one thread.

Call :func:`limit_blas_threads` once in each worker, before serving (in a
BentoML service's ``__init__``, which runs in every worker, or at the top of a
worker's entry point)::

    from guarded_serving.operational.blas import limit_blas_threads

    limit_blas_threads(1)

or set ``OPENBLAS_NUM_THREADS=1`` (and ``OMP_NUM_THREADS=1``,
``MKL_NUM_THREADS=1``) in the workers' environment before Python starts.
It applies to the whole worker process, the model's own NumPy/SciPy
arithmetic included: with one worker per core that is what you want; a
single-worker service on a big machine whose model gains from parallel BLAS
should leave it alone.

Why not scoped to the guard's own calls: a scoped limit costs more than the
verdict it protects (``threadpoolctl``'s ``threadpool_limits(1, "blas")``
1.8 ms per call, a cached ``ThreadpoolController().limit`` 12.8 µs p50, against
7.8 µs for a whole one-row verdict; measured by ``bench_edge_cost.py``), and
OpenBLAS's pthreads pool is process-wide: a limit set from one request thread
changes every thread's BLAS, and threadpoolctl ignores limits set from all but
one controlling thread. The guard's small verdicts (a few rows of tens of
features) stay below OpenBLAS's threading thresholds and run on one thread
anyway; wide features and batches are where the per-worker setting matters.
"""

from __future__ import annotations

from typing import Any

__all__ = ["blas_threads", "limit_blas_threads"]


def _threadpoolctl() -> Any:
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover - a core dependency; kept for stripped installs
        raise ImportError("limit_blas_threads needs threadpoolctl (pip install threadpoolctl); or set "
                          "OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 in the worker's "
                          "environment before it starts") from None
    return threadpoolctl


def blas_threads() -> dict[str, int]:
    """Thread-pool size of each BLAS library loaded in this process, by library (e.g. ``{"openblas": 2}``)."""
    tc = _threadpoolctl()
    return {f"{i['internal_api']}:{i['prefix']}": int(i["num_threads"])
            for i in tc.threadpool_info() if i.get("user_api") == "blas"}


def limit_blas_threads(threads: int = 1) -> dict[str, int]:
    """Limit every BLAS library loaded in this process to ``threads`` threads, for good.

    Call once per worker process (not per request: it walks the loaded libraries,
    about a millisecond). Returns the pool sizes before the change
    (:func:`blas_threads`'s layout), e.g. to restore them with another call.
    Libraries loaded later are not affected: import NumPy/SciPy/the model first,
    or use the environment variables in the module docstring.
    """
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads={threads!r} is invalid: expected a positive integer")
    tc = _threadpoolctl()
    before = blas_threads()
    tc.ThreadpoolController().limit(limits=threads, user_api="blas")  # applied now, kept (not a context)
    # Let any thread change the limit later (threadpoolctl >= 3.6 otherwise keeps this one as the only
    # thread whose OpenBLAS limits take effect).
    ctl_cls = getattr(tc, "OpenBLASController", None)
    if ctl_cls is not None and hasattr(ctl_cls, "clear_controlling_thread"):
        ctl_cls.clear_controlling_thread()
    return before
