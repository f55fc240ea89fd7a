"""Dependency checks against real packages: installed, missing, mismatched, broken, hanging."""

from __future__ import annotations

import importlib.metadata as md
import textwrap

import pytest

from guarded_serving.errors import ConfigError
from guarded_serving.operational.dependencies import DependencyChecker, parse_requirements, version_matches


def _fake_dist(root, name, version, body):
    """A real installed distribution (module + dist-info metadata) under ``root``."""
    (root / f"{name}.py").write_text(textwrap.dedent(body))
    info = root / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(name + "\n")


def test_installed_package_at_its_version_is_ok():
    """numpy pinned at its installed version imports and is ok."""
    v = md.version("numpy")
    (r,) = DependencyChecker({"numpy": v}).check()
    assert r.name == "dependency.numpy" and r.status == "ok"
    assert r.details["found"] == v and r.details["import"] == "ok"


def test_module_name_comes_from_metadata():
    """scikit-learn is imported as sklearn, found through the distribution's metadata."""
    (r,) = DependencyChecker(["scikit-learn"]).check(imports=False)
    assert r.status == "ok" and r.details["module"] == "sklearn"


def test_missing_package_fails_with_expected_and_found():
    """A package that is not installed fails, naming it, the pin and "found none"."""
    (r,) = DependencyChecker({"guarded-serving-no-such-package": "1.2.3"}).check()
    assert r.status == "failing"
    assert "guarded-serving-no-such-package" in r.reason and "1.2.3" in r.reason and "none" in r.reason
    assert r.details["found"] is None


def test_version_mismatch_fails_with_both_versions():
    """numpy pinned at 1.0.0 fails, naming the installed version and the pin."""
    v = md.version("numpy")
    (r,) = DependencyChecker({"numpy": "1.0.0"}).check()
    assert r.status == "failing" and v in r.reason and "1.0.0" in r.reason
    assert r.details == {**r.details, "expected": "1.0.0", "found": v}


def test_specifier_pins():
    """A PEP 440 specifier is honoured."""
    assert version_matches("2.4.6", ">=2,<3")
    assert not version_matches("2.4.6", "<2")
    assert version_matches("2.0", "2.0.0")
    (r,) = DependencyChecker({"numpy": ">=1"}).check(imports=False)
    assert r.status == "ok"


def test_import_that_raises_is_reported(tmp_path, monkeypatch):
    """An installed package whose import raises (a broken shared library) fails with the error."""
    _fake_dist(tmp_path, "gs_broken_lib", "1.0", """
        raise ImportError("libgsfoo.so.1: cannot open shared object file: No such file or directory")
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    (r,) = DependencyChecker({"gs_broken_lib": "1.0"}).check()
    assert r.status == "failing"
    assert "libgsfoo.so.1" in r.reason and "1.0" in r.reason and r.details["found"] == "1.0"


def test_import_that_hangs_times_out(tmp_path, monkeypatch):
    """An import that hangs is cut off at the timeout and reported as hanging."""
    _fake_dist(tmp_path, "gs_hanging_lib", "0.1", """
        import time
        time.sleep(60)
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    (r,) = DependencyChecker(["gs_hanging_lib"], import_timeout_s=1.0).check()
    assert r.status == "failing" and "hangs" in r.reason


def test_manifest_packages_mapping_is_accepted():
    """A manifest's "packages" mapping (name -> version) is taken as is."""
    manifest = {"packages": {"numpy": md.version("numpy"), "scipy": md.version("scipy")}}
    results = DependencyChecker(manifest["packages"]).check(imports=False)
    assert [r.status for r in results] == ["ok", "ok"]


@pytest.mark.parametrize("bad", ["numpy", {"numpy": 2}, [""], {"numpy": {"versoin": "1"}}])
def test_bad_specs_are_config_errors(bad):
    """Malformed dependency specs raise ConfigError naming the problem."""
    with pytest.raises(ConfigError):
        parse_requirements(bad)


def test_trust_loaded_skips_the_child_only_for_modules_this_process_runs(tmp_path, monkeypatch):
    """The round at start (trust_loaded) counts numpy, imported here at its on-disk version, as importable
    without a child interpreter; a package this process has not imported is still imported in a child."""
    import numpy  # noqa: F401

    _fake_dist(tmp_path, "gs_broken_lib2", "1.0", """
        raise ImportError("libgsbar.so.2: cannot open shared object file")
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    ok, broken = DependencyChecker({"numpy": md.version("numpy"), "gs_broken_lib2": "1.0"}).check(trust_loaded=True)
    assert ok.status == "ok" and ok.details["import_checked"] == "loaded in this process"
    assert broken.status == "failing" and "libgsbar.so.2" in broken.reason
    assert broken.details["import_checked"] == "child interpreter"
    (again,) = DependencyChecker({"numpy": md.version("numpy")}).check()
    assert again.status == "ok" and again.details["import_checked"] == "child interpreter"
