"""Fingerprint of the preprocessing code, so serving with a pipeline that
differs from training's is caught.

The callable is named ``"module:qualname"`` (e.g. ``"services.features:prepare"``).
Its fingerprint has three hashes; each catches something the others miss:

``source_sha256``
    SHA-256 of ``inspect.getsource(func)``: any edit to the function's text
    (logic, constants, default arguments, even comments or whitespace inside it).
``code_sha256``
    SHA-256 of the *loaded* code object: bytecode, constants, names and those
    of nested functions and lambdas, recursively (file name and line numbers
    excluded, so moving the function does not change it). It catches code
    running in memory that differs from the file on disk (a stale import, a
    patched function), and works when no source ships. Bytecode differs
    between Python minor versions, so it is only compared when the ``python``
    tag matches.
``module_sha256``
    SHA-256 of the module's file: changes *around* the function that alter
    what it does (a module-level constant, a helper it calls, an import).
    Any edit to the module changes it, so keep preprocessing in a module of
    its own.

Not caught: changes inside other modules the function imports (pin those
packages in the manifest's ``packages``), and data files it reads at run time
(add them as artifacts).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable

from .hashing import sha256_file

__all__ = ["Fingerprint", "fingerprint", "resolve_callable"]

_PY = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"


@dataclass(frozen=True)
class Fingerprint:
    callable: str
    source_sha256: str | None
    code_sha256: str | None
    module_sha256: str | None
    python: str

    def to_dict(self) -> dict[str, Any]:
        return {"callable": self.callable, "source_sha256": self.source_sha256,
                "code_sha256": self.code_sha256, "module_sha256": self.module_sha256, "python": self.python}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fingerprint":
        return cls(callable=str(d["callable"]), source_sha256=d.get("source_sha256"),
                   code_sha256=d.get("code_sha256"), module_sha256=d.get("module_sha256"),
                   python=str(d.get("python", "")))

    def differences(self, found: "Fingerprint") -> list[tuple[str, str | None, str | None]]:
        """``(what, expected, found)`` for every hash that differs (code only on the same Python)."""
        out = []
        if self.source_sha256 != found.source_sha256:
            out.append(("source", self.source_sha256, found.source_sha256))
        if self.python == found.python and self.code_sha256 != found.code_sha256:
            out.append(("bytecode", self.code_sha256, found.code_sha256))
        if self.module_sha256 != found.module_sha256:
            out.append(("module file", self.module_sha256, found.module_sha256))
        return out


def resolve_callable(spec: str) -> Callable[..., Any]:
    """Import ``"module:qualname"`` and return the callable; a clear ValueError otherwise."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"preprocessing={spec!r} is invalid: expected 'module:function', "
                         "e.g. 'services.features:prepare'")
    mod_name, qual = spec.split(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"preprocessing={spec!r}: cannot import module {mod_name!r}: {exc}") from exc
    for part in qual.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"preprocessing={spec!r}: module {mod_name!r} has no attribute {qual!r}") from None
    if not callable(obj):
        raise ValueError(f"preprocessing={spec!r} is not callable (a {type(obj).__name__})")
    return obj  # type: ignore[no-any-return]


def fingerprint(spec: str) -> Fingerprint:
    """Fingerprint the callable named ``spec`` as it is loaded in this process."""
    func = resolve_callable(spec)
    target = inspect.unwrap(func)
    try:
        source: str | None = inspect.getsource(target)
    except (OSError, TypeError):
        source = None
    code = getattr(target, "__code__", None) or getattr(getattr(target, "__call__", None), "__code__", None)
    module = sys.modules.get(spec.split(":")[0])
    mod_file = getattr(module, "__file__", None)
    return Fingerprint(
        callable=spec,
        source_sha256=None if source is None else hashlib.sha256(source.encode("utf-8")).hexdigest(),
        code_sha256=None if code is None else _code_hash(code),
        module_sha256=sha256_file(mod_file).sha256 if mod_file else None,
        python=_PY,
    )


def _code_hash(code: types.CodeType) -> str:
    h = hashlib.sha256()
    _feed_code(h, code)
    return h.hexdigest()


def _feed_code(h: Any, code: types.CodeType) -> None:
    h.update(code.co_code)
    for field in (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars):
        h.update(repr(field).encode())
    h.update(repr((code.co_argcount, code.co_kwonlyargcount, code.co_flags)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            h.update(b"<code>")
            _feed_code(h, const)
        elif isinstance(const, frozenset):  # set literals: repr order varies with hash seed
            h.update(repr(sorted(const, key=repr)).encode())
        else:
            h.update(repr(const).encode())
