"""The README's main job: the demo serves the example, replays every scenario, and catches each one."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_demo_catches_every_scenario(artifacts):
    """`python -m services.demo` exits 0 and reports every replayed failure as caught, the image and
    text examples' included."""
    proc = subprocess.run([sys.executable, "-m", "services.demo"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "[MISSED]" not in out
    assert "[CAUGHT] slow model calls" in out and "[CAUGHT] malformed input" in out
    assert "[CAUGHT] digits: blank images" in out and "[CAUGHT] sentiment: pasted HTML" in out
    assert "[CAUGHT] sentiment: blocked words" in out
    assert "[CAUGHT] recommender: feedback loop" in out
    assert "guard health:" in out
