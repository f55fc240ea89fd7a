"""Input validation on the request path: type, shape, size, NaN and inf.

Every failure raises :class:`~guarded_serving.errors.InvalidInputError` naming
the parameter and the problem; inside BentoML that is an HTTP 400.
Cost: O(rows x features) vectorised checks.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import InvalidInputError

__all__ = ["as_feature_matrix", "check_plausible", "plausible_limits"]

_NUMERIC = frozenset("fiub")


def as_feature_matrix(value: Any, field: str, *, n_features: int | None, max_rows: int,
                      allow_nan: bool | np.ndarray, feature_names: Sequence[str] = (),
                      boolean: np.ndarray | None = None) -> np.ndarray:
    """Return ``value`` as a 2-D float array of shape (n_rows, n_features), or raise.

    Parameters
    ----------
    value : array-like
        The guarded function's input argument.
    field : str
        The parameter's name, used in error messages.
    allow_nan : bool or ndarray of bool of shape (n_features,)
        Where NaN is accepted as a missing value: nowhere, everywhere, or per feature
        (a reference profile's missing-value policy).
    feature_names : sequence of str
        Named in messages about a feature.
    boolean : ndarray of bool of shape (n_features,), optional
        Features the profile knows as flags (0/1): only there are booleans accepted.
    """
    if isinstance(value, np.ndarray):
        x = value
    else:
        if isinstance(value, (str, bytes, dict)) or value is None:
            raise InvalidInputError(field, f"expected a 2-D array of numbers, got {type(value).__name__}")
        try:
            x = np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged nested lists
            raise InvalidInputError(field, f"expected a 2-D array of numbers, got a ragged or mixed sequence ({exc})") from None
    if x.dtype.kind not in _NUMERIC:
        raise InvalidInputError(field, _not_numbers(x, feature_names))
    if x.dtype.kind == "b" and x.ndim == 2 and x.size and not (
            boolean is not None and len(boolean) == x.shape[1] and bool(np.all(boolean))):
        name = f" ({feature_names[0]})" if feature_names else ""
        raise InvalidInputError(field, f"row 0, column 0{name} is a boolean; expected numbers (send 1 or 0 "
                                       f"if the feature is a count or a flag)")
    if x.size == 0 and x.ndim <= 2:
        raise InvalidInputError(field, f"empty batch (shape {x.shape}): expected at least one row")
    if x.ndim != 2:
        raise InvalidInputError(field, f"expected a 2-D array (rows x features), got {x.ndim}-D with shape {x.shape}")
    rows, cols = x.shape
    if rows > max_rows:
        raise InvalidInputError(field, f"batch of {rows} rows exceeds the limit of {max_rows}")
    if n_features is not None and cols != n_features:
        raise InvalidInputError(field, f"expected {n_features} features per row, got {cols}")
    if x.dtype.kind != "f":
        return x.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        bad = ~finite
        per_feature = not isinstance(allow_nan, (bool, np.bool_))
        if per_feature:
            bad &= ~(np.isnan(x) & np.asarray(allow_nan, dtype=bool)[None, :])
        elif allow_nan:
            bad &= ~np.isnan(x)
        if bad.any():
            r, c = (int(v) for v in np.argwhere(bad)[0])
            kind = "NaN" if np.isnan(x[r, c]) else ("inf" if x[r, c] > 0 else "-inf")
            n_bad = int(bad.sum())
            more = f" ({n_bad} non-finite values in all)" if n_bad > 1 else ""
            name = f" ({feature_names[c]})" if c < len(feature_names) else ""
            if kind == "NaN" and per_feature:
                raise InvalidInputError(field, f"row {r}, feature {c}{name} is NaN; training data never had missing "
                                               f"values there, so values must be finite{more}")
            raise InvalidInputError(field, f"row {r}, feature {c}{name} is {kind}; values must be finite{more}")
    return x


def _not_numbers(x: np.ndarray, feature_names: Sequence[str]) -> str:
    """Why a non-numeric array is refused, naming the first offending row and column."""
    def where(idx: tuple[int, ...]) -> str:
        if len(idx) == 2:
            r, c = idx
            name = f" ({feature_names[c]})" if c < len(feature_names) else ""
            return f"row {r}, column {c}{name}"
        return "position " + ", ".join(map(str, idx))

    if x.dtype.kind in "USa" and x.ndim >= 1:
        for idx, v in np.ndenumerate(x):
            try:
                float(v)
            except (TypeError, ValueError):
                return f"{where(idx)} is a string ({str(v)[:40]!r}); expected numbers"
        return f"{where((0,) * x.ndim)} is a string; expected numbers, not numbers in quotes"
    if x.dtype.kind == "O" and x.ndim >= 1:
        for idx, v in np.ndenumerate(x):
            if v is None:
                return f"{where(idx)} is null; expected a number (missing values are not accepted there)"
            if isinstance(v, (bool, np.bool_)):
                return f"{where(idx)} is a boolean; expected numbers"
            if isinstance(v, (str, bytes)):
                return f"{where(idx)} is a string ({str(v)[:40]!r}); expected numbers"
            if isinstance(v, (list, tuple, dict)):
                return f"{where(idx)} is a {type(v).__name__}; expected rows of equal length holding numbers"
        return "expected numbers, got a ragged sequence or mixed types"
    return f"expected numbers, got dtype {x.dtype}"


def plausible_limits(minimum: np.ndarray, maximum: np.ndarray, ranges: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``(lo, hi)`` beyond which a value is absurd: ``ranges`` training ranges (at least
    ``ranges`` units, and ``ranges`` times the largest magnitude seen, so a constant or low-variance
    feature is not held to a hair's breadth) outside the training minimum and maximum.
    Features without a finite training range are not limited (infinite bounds)."""
    lo, hi = np.asarray(minimum, dtype=float), np.asarray(maximum, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.maximum.reduce([hi - lo, np.abs(lo), np.abs(hi), np.ones_like(lo)])
        low, high = lo - ranges * scale, hi + ranges * scale
    known = np.isfinite(low) & np.isfinite(high)
    return np.where(known, low, -np.inf), np.where(known, high, np.inf)


def check_plausible(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, field: str, ranges: float,
                    feature_names: Sequence[str] = ()) -> None:
    """Refuse values absurdly far outside the training data (:func:`plausible_limits`) before the
    model sees them: a client's value, not a model failure. O(rows x features), vectorised."""
    if x.ndim != 2 or x.shape[1] != lo.shape[0]:
        return
    bad = (x < lo) | (x > hi)
    if not bad.any():
        return
    r, c = (int(v) for v in np.argwhere(bad)[0])
    name = f" ({feature_names[c]})" if c < len(feature_names) else ""
    raise InvalidInputError(field, f"row {r}, feature {c}{name} is {x[r, c]:g}, more than {ranges:g} training "
                                   f"ranges outside what the model was trained on ([{lo[c]:g}, {hi[c]:g}] "
                                   f"accepted); refused before the model sees it")
