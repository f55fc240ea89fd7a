"""The cold-path benchmark runs end to end on the example's guard and reports each capability's share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not (ROOT / "services" / "artifacts" / "profile.npz").exists(),
                    reason="needs the example's artifacts (python -m services.train)")
def test_reports_the_guard_cost_and_every_capability(tmp_path):
    """A tiny run (in a child, since it imports the example service): exit 0, the full guard's cost, one line per
    capability on the request path, and its temporary state directory removed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    r = subprocess.run([sys.executable, str(ROOT / "load_tests" / "bench_cold_path.py"), "--reps", "1",
                        "--calls", "20", "--rate", "0"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "all capabilities" in out and "no hooks (wrapper only)" in out
    for name in ("edge_cases", "drift", "performance", "slo"):
        assert f"without {name}" in out, out
    assert not any(p.name.startswith("gs-cold-") for p in tmp_path.iterdir())  # its stores' directory is gone


def test_refuses_an_empty_run():
    r = subprocess.run([sys.executable, str(ROOT / "load_tests" / "bench_cold_path.py"), "--reps", "0"],
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--reps=0" in r.stderr
