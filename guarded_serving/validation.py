"""Input validation on the request path: type, shape, size, NaN and inf.

Every failure raises :class:`~guarded_serving.errors.InvalidInputError` naming
the parameter and the problem; inside BentoML that is an HTTP 400.
Cost: O(rows x features) vectorised checks.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import InvalidInputError

__all__ = ["as_feature_matrix"]

_NUMERIC = frozenset("fiub")


def as_feature_matrix(value: Any, field: str, *, n_features: int | None, max_rows: int,
                      allow_nan: bool | np.ndarray, feature_names: Sequence[str] = ()) -> np.ndarray:
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
        if x.dtype.kind == "O" and x.ndim >= 1:
            raise InvalidInputError(field, "expected numbers, got a ragged sequence or mixed types")
        raise InvalidInputError(field, f"expected numbers, got dtype {x.dtype}")
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
