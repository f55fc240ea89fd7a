"""Tests of guarded_serving.integrity.fingerprint: the preprocessing code's fingerprint."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from guarded_serving.integrity.fingerprint import fingerprint, resolve_callable

SOURCE = textwrap.dedent('''
    SCALE = 2.0

    def prepare(x):
        return [v * SCALE for v in x]
''')


@pytest.fixture
def module(tmp_path, monkeypatch):
    """A real module on disk, importable as gs_fp_mod."""
    path = tmp_path / "gs_fp_mod.py"
    path.write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("gs_fp_mod", None)
    importlib.invalidate_caches()
    yield path
    sys.modules.pop("gs_fp_mod", None)


def _reload():
    sys.modules.pop("gs_fp_mod", None)
    importlib.invalidate_caches()
    return fingerprint("gs_fp_mod:prepare")


class TestFingerprint:
    def test_stable_for_unchanged_code(self, module):
        """Fingerprinting the same code twice gives the same fingerprint."""
        assert fingerprint("gs_fp_mod:prepare") == _reload()

    def test_edit_inside_function_changes_source_and_bytecode(self, module):
        """Changing the function's logic changes its source, bytecode and module hashes."""
        a = fingerprint("gs_fp_mod:prepare")
        module.write_text(SOURCE.replace("v * SCALE", "v / SCALE"))
        b = _reload()
        assert {w for w, _, _ in a.differences(b)} == {"source", "bytecode", "module file"}

    def test_module_constant_change_is_caught_by_module_hash_only(self, module):
        """A module-level constant the function uses changes only the module file hash."""
        a = fingerprint("gs_fp_mod:prepare")
        module.write_text(SOURCE.replace("SCALE = 2.0", "SCALE = 3.0"))
        b = _reload()
        assert [w for w, _, _ in a.differences(b)] == ["module file"]

    def test_code_loaded_in_memory_differs_from_disk(self, module):
        """A running function whose file was edited after import differs in source but not in bytecode."""
        a = fingerprint("gs_fp_mod:prepare")
        module.write_text(SOURCE.replace("v * SCALE", "v + SCALE"))
        b = fingerprint("gs_fp_mod:prepare")  # same loaded module, new file on disk
        assert {w for w, _, _ in a.differences(b)} == {"source", "module file"}


class TestResolve:
    @pytest.mark.parametrize("spec, match", [
        ("no_colon", "expected 'module:function'"),
        ("gs_no_such_module_xyz:f", "cannot import module"),
        ("os:no_such_function_xyz", "has no attribute"),
        ("os:sep", "is not callable"),
    ])
    def test_bad_specs_are_clear_errors(self, spec, match):
        """A malformed, unimportable, missing or non-callable spec names the problem."""
        with pytest.raises(ValueError, match=match):
            resolve_callable(spec)
