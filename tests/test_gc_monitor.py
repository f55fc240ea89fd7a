"""GC pause timing through gc.callbacks, with real collections."""

from __future__ import annotations

import gc
import time

from guarded_serving.operational.gc_monitor import GcMonitor


def _garbage(n=200_000):
    out = []
    for i in range(n):
        a, b = [i], {}
        a.append(b)
        b["a"] = a  # a cycle only the collector frees
        out.append(a)
    return out


def test_a_real_collection_is_timed_and_found_inside_the_interval():
    """A gc.collect() inside [t0, t1] shows as overlapping pause time; an interval without collections shows none."""
    m = GcMonitor()
    m.install()
    try:
        junk = _garbage()
        del junk
        t0 = time.perf_counter_ns()
        gc.collect()
        t1 = time.perf_counter_ns()
        gc.disable()
        t2 = time.perf_counter_ns()
        time.sleep(0.01)
        t3 = time.perf_counter_ns()
    finally:
        gc.enable()
        m.uninstall()
    assert m.pauses >= 1 and m.max_ns > 0
    assert m.overlap_ms(t0, t1) > 0
    assert m.overlap_ms(t2, t3) == 0.0
    assert m.recent()[0]["pause_ms"] > 0


def test_uninstall_removes_the_callback():
    """After uninstall the monitor no longer sees collections."""
    m = GcMonitor()
    m.install()
    m.uninstall()
    assert m._hook not in gc.callbacks
    gc.collect()
    assert m.pauses == 0


def test_dropped_monitor_is_purged():
    """A monitor dropped without uninstall is purged from gc.callbacks by the next install."""
    m = GcMonitor()
    m.install()
    hook = m._hook
    del m
    gc.collect()
    m2 = GcMonitor()
    m2.install()
    try:
        assert hook not in gc.callbacks
    finally:
        m2.uninstall()


def test_ring_is_bounded():
    """Only the last `ring` pauses are kept."""
    m = GcMonitor(ring=4)
    m.install()
    try:
        for _ in range(10):
            gc.collect()
    finally:
        m.uninstall()
    assert m.pauses >= 10 and len(m.recent()) == 4
