"""The GPU check script: the no-GPU exit, and its report on a CPU model with replayed H200 readings."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from guarded_serving.operational.hardware import StaticProvider
from load_tests import gpu_check

ROOT = Path(__file__).resolve().parent.parent


def _gpu_here() -> bool:
    torch, _ = gpu_check.find_gpu()
    return torch is not None


@pytest.mark.skipif(_gpu_here(), reason="a GPU is here: the no-GPU path cannot be taken")
class TestNoGpu:
    def test_module_says_why_and_exits_0(self, capsys):
        """Without a usable GPU the check prints why and exits 0 (3 with --require-gpu)."""
        assert gpu_check.main([]) == 0
        assert "SKIPPED, no usable GPU here" in capsys.readouterr().out
        assert gpu_check.main(["--require-gpu"]) == gpu_check.NO_GPU_EXIT

    @pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="an NVIDIA device node exists here")
    def test_shell_script_exits_cleanly_before_installing_anything(self, tmp_path):
        """scripts/gpu_check.sh exits 0 with a clear message, and creates no venv, when there is no GPU."""
        env = {**os.environ, "GPU_CHECK_VENV": str(tmp_path / "venv"), "PATH": "/usr/bin:/bin"}
        r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], env=env, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "SKIPPED, no usable GPU here" in r.stdout and not (tmp_path / "venv").exists()


class _NoLoad:
    matmuls = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_report_on_replayed_h200_readings(capsys):
    """With the H200's readings replayed and a CPU model that slows under 'load', the report shows every GPU
    check ok and slow calls caused by GPU saturation, plus the guard's overhead."""
    h200 = {"gpus": [{"index": 0, "name": "NVIDIA H200", "temperature_c": 60, "slowdown_c": 89, "shutdown_c": 94,
                      "memory_used_mb": 20_000.0, "memory_total_mb": 143_771.0, "utilization_percent": 99.0,
                      "power_w": 692.0, "power_limit_w": 700.0, "ecc_uncorrected_volatile": 0,
                      "remapped_rows": {"correctable": 0, "uncorrectable": 0, "pending": False, "failure": False},
                      "clock_event_reasons": ["sw_power_cap"]}]}
    loaded = threading.Event()

    class Load(_NoLoad):
        def __enter__(self):
            loaded.set()
            return self

    def model(x):
        time.sleep(0.004 if loaded.is_set() else 0.001)
        return 1.0

    args = gpu_check.parser().parse_args(["--idle-seconds", "0.3", "--load-seconds", "1.0", "--interval", "0.1",
                                          "--overhead-calls", "300"])
    assert gpu_check.run_check(model, Load, args, providers=[StaticProvider(h200)]) == 0
    out = capsys.readouterr().out
    assert "692/700 W" in out and "reasons sw_power_cap" in out
    power = next(line for line in out.splitlines() if "hardware.gpu0.power" in line)
    assert " ok " in power and "at the cap" in power
    assert "gpu_saturation" in out.split("causes of slow calls")[1]
    assert "guard's own cost, tracing off" in out
    assert "all GPU checks ok" in out
