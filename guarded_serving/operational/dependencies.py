"""Dependency checks: is each package the model needs installed, at the pinned version, importable?

Requirements come as a mapping ``{"numpy": "2.4.6", "scikit-learn": ">=1.4", "river": None}``
(``None`` or ``""``: any version), as a list of names, or as the ``"packages"``
mapping of a deployment manifest. A value may also be a dict
``{"version": "1.5.2", "module": "sklearn"}`` naming the import when it
cannot be found from the distribution's metadata.

Each check reads the installed version from the distribution metadata on
disk (so a package replaced under a running server is seen), compares it
with the pin (exact, or a PEP 440 specifier when it starts with an
operator), and imports the module in a child interpreter with a timeout, so
an import that raises (a broken shared library) or hangs is reported without
touching the serving process. The version already loaded in this process is
reported too: a pinned package upgraded on disk under a running server shows
``loaded`` != ``found``.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any, Mapping

from .. import health as H
from ..errors import ConfigError
from ..health import CheckResult

__all__ = ["DependencyChecker", "Requirement", "parse_requirements"]

_OPS = ("==", "!=", "<", ">", "~", "=")
# The child lowers its own CPU priority first: a background check must not take CPU from serving (an import
# of scikit-learn costs about a second of CPU).
_IMPORT_SNIPPET = ("import importlib, os, sys\n"
                   "try:\n    os.nice(10)\nexcept (AttributeError, OSError):\n    pass\n"
                   "m = importlib.import_module(sys.argv[1])\n"
                   "print(getattr(m, '__version__', ''))")


@dataclass(frozen=True)
class Requirement:
    """One package the model needs: distribution name, pinned version or specifier, import name."""

    package: str
    expected: str | None = None
    module: str | None = None


def parse_requirements(spec: Any) -> list[Requirement]:
    """Requirements from a mapping, a list of names, or ``None``; ConfigError on anything else."""
    if spec is None:
        return []
    if isinstance(spec, str):
        raise ConfigError(f"dependencies={spec!r} is invalid: expected a mapping of package -> version, "
                          "or a list of package names")
    out = []
    if isinstance(spec, Mapping):
        for name, v in spec.items():
            module = None
            if isinstance(v, Mapping):
                unknown = set(v) - {"version", "module"}
                if unknown:
                    raise ConfigError(f"dependencies[{name!r}] has unknown keys {sorted(unknown)}: "
                                      "expected 'version' and/or 'module'")
                module, v = v.get("module"), v.get("version")
            if v is not None and not isinstance(v, str):
                raise ConfigError(f"dependencies[{name!r}]={v!r} is invalid: expected a version string or None")
            out.append(Requirement(_name(name), v or None, module))
    else:
        try:
            names = list(spec)
        except TypeError:
            raise ConfigError(f"dependencies={spec!r} is invalid: expected a mapping or a list of names") from None
        out = [Requirement(_name(n)) for n in names]
    return out


def _name(n: Any) -> str:
    if not isinstance(n, str) or not n.strip():
        raise ConfigError(f"dependency name {n!r} is invalid: expected a non-empty package name")
    return n.strip()


def version_matches(found: str, expected: str) -> bool:
    """Whether ``found`` satisfies ``expected`` (exact pin or PEP 440 specifier)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        if expected.startswith(_OPS):
            return SpecifierSet(expected).contains(found, prereleases=True)
        return Version(found) == Version(expected)
    except (InvalidSpecifier, InvalidVersion):
        return found == expected


class DependencyChecker:
    """Check a list of requirements; results cached for ``checks()``.

    Parameters
    ----------
    requirements : iterable of Requirement, or anything :func:`parse_requirements` takes
    import_timeout_s : float, default=30
        An import that takes longer is reported as hanging.
    """

    def __init__(self, requirements: Any, *, import_timeout_s: float = 30.0) -> None:
        reqs = list(requirements) if isinstance(requirements, (list, tuple)) and all(
            isinstance(r, Requirement) for r in requirements) else parse_requirements(requirements)
        self.requirements: list[Requirement] = reqs
        self.import_timeout_s = float(import_timeout_s)
        self._results: dict[str, CheckResult] = {
            r.package: CheckResult(f"dependency.{r.package}", H.UNAVAILABLE, "not checked yet",
                                   {"package": r.package, "expected": r.expected})
            for r in reqs}
        self._lock = threading.Lock()
        self._modules: dict[str, list[str]] | None = None
        self.rounds = 0

    def checks(self) -> list[CheckResult]:
        return list(self._results.values())

    def check(self, *, imports: bool = True, trust_loaded: bool = False) -> list[CheckResult]:
        """Check every requirement now (blocking; up to ``import_timeout_s`` per import).

        ``trust_loaded``: a module this process has already imported, at the version found on
        disk, counts as importable without a child interpreter (the serving process is the proof);
        the operational component uses it for the round at start, while the model has just been
        loaded, so starting a server does not spend seconds of CPU re-importing what it runs.
        Later rounds import in a child again (a package replaced on disk is seen).
        """
        with self._lock:
            if imports or self._modules is None:  # refreshed each full round (packages may change)
                self._modules = _module_index()
            modules = self._modules
            for r in self.requirements:
                self._results[r.package] = self._check_one(r, modules, imports, trust_loaded)
            self.rounds += 1
            return self.checks()

    def _check_one(self, r: Requirement, modules: Mapping[str, list[str]], imports: bool,
                   trust_loaded: bool = False) -> CheckResult:
        name = f"dependency.{r.package}"
        details: dict[str, Any] = {"package": r.package, "expected": r.expected, "found": None}
        want = f"expected {r.expected}" if r.expected else "any version"
        try:
            found = md.version(r.package)
        except md.PackageNotFoundError:
            return CheckResult(name, H.FAILING, f"{r.package} is not installed ({want}, found none)", details)
        details["found"] = found
        module = r.module or _guess_module(r.package, modules)
        details["module"] = module
        loaded = getattr(sys.modules.get(module or ""), "__version__", None)
        details["loaded"] = loaded if isinstance(loaded, str) else None
        if r.expected and not version_matches(found, r.expected):
            return CheckResult(name, H.FAILING, f"{r.package} {found} is installed, {want}", details)
        if r.expected and isinstance(loaded, str) and loaded != found and not version_matches(loaded, r.expected):
            return CheckResult(name, H.FAILING, f"this process runs {r.package} {loaded}, {want} "
                               f"(found {found} on disk)", details)
        if imports and module:
            if trust_loaded and isinstance(loaded, str) and loaded == found:
                err, details["import_checked"] = None, "loaded in this process"
            else:
                err, details["import_checked"] = self._try_import(module), "child interpreter"
            details["import"] = "ok" if err is None else err
            if err is not None:
                return CheckResult(name, H.FAILING, f"import {module} ({r.package} {found}, {want}) {err}", details)
        return CheckResult(name, H.OK, f"{r.package} {found}" + (f" matches {r.expected}" if r.expected else "")
                           + (f", import {module} ok" if imports and module else ""), details)

    def _try_import(self, module: str) -> str | None:
        """None if ``import module`` succeeds in a child interpreter, else what went wrong."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            proc = subprocess.run([sys.executable, "-c", _IMPORT_SNIPPET, module], env=env,
                                  capture_output=True, text=True, timeout=self.import_timeout_s)
        except subprocess.TimeoutExpired:
            return f"did not finish within {self.import_timeout_s:g} s (hangs)"
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            last = lines[-1] if lines else f"exit status {proc.returncode}"
            if proc.returncode < 0:
                last = f"killed by signal {-proc.returncode} ({last})"
            return f"raised: {last}"
        return None


def _module_index() -> dict[str, list[str]]:
    """distribution name (normalised) -> top-level import names."""
    out: dict[str, list[str]] = {}
    try:
        pd = md.packages_distributions()
    except Exception:  # pragma: no cover - broken metadata somewhere
        return out
    for mod, dists in pd.items():
        if mod.startswith("_") or not mod.isidentifier():
            continue
        for d in dists:
            out.setdefault(_norm(d), []).append(mod)
    return out


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _guess_module(package: str, modules: Mapping[str, list[str]]) -> str | None:
    cands = modules.get(_norm(package), [])
    guess = package.replace("-", "_").replace(".", "_")
    for c in cands:
        if c.lower() == guess.lower():
            return c
    if cands:
        return sorted(cands, key=len)[0]
    return guess if guess.isidentifier() else None

