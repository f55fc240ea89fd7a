"""Input validation: every malformed input is an InvalidInputError naming the field and problem."""

import numpy as np
import pytest

from guarded_serving.errors import InvalidInputError
from guarded_serving.validation import as_feature_matrix


def check(value, **kw):
    kw = {"n_features": 3, "max_rows": 100, "allow_nan": False, **kw}
    return as_feature_matrix(value, "inputs", **kw)


@pytest.mark.parametrize("value,message", [
    ("abc", "inputs: expected a 2-D array of numbers, got str"),
    (None, "got NoneType"),
    ({"a": 1}, "got dict"),
    ([[1, 2], [3]], "ragged"),
    ([["a", "b", "c"]], "row 0, column 0 is a string ('a'); expected numbers"),
    ([1.0, 2.0, 3.0], "expected a 2-D array (rows x features), got 1-D"),
    (np.ones((1, 3, 1)), "got 3-D"),
    ([], "empty batch"),
    (np.ones((0, 3)), "empty batch"),
    (np.ones((2, 4)), "expected 3 features per row, got 4"),
    (np.ones((101, 3)), "batch of 101 rows exceeds the limit of 100"),
    ([[1.0, np.nan, 3.0]], "row 0, feature 1 is NaN"),
    ([[1.0, 2.0, 3.0], [np.inf, 1, 1]], "row 1, feature 0 is inf"),
    ([[-np.inf, np.nan, 3.0]], "2 non-finite values in all"),
])
def test_rejects_with_named_problem(value, message):
    """Each malformed input raises InvalidInputError with the field name and a precise problem."""
    with pytest.raises(InvalidInputError) as info:
        check(value)
    assert str(info.value).startswith("inputs: ")
    assert message in str(info.value)
    assert info.value.error_code == 400 and info.value.field == "inputs"


def test_accepts_lists_and_ints():
    """Lists of numbers and integer arrays become float64 matrices."""
    x = check([[1, 2, 3]])
    assert x.dtype == np.float64 and x.shape == (1, 3)


def test_float_array_passed_through_without_copy():
    """A valid float array is returned as is (no copy on the request path)."""
    a = np.ones((2, 3))
    assert check(a) is a


def test_nan_allowed_when_configured_but_inf_never():
    """allow_nan admits missing values; inf is still rejected."""
    assert np.isnan(check([[1.0, np.nan, 3.0]], allow_nan=True)).sum() == 1
    with pytest.raises(InvalidInputError, match="inf"):
        check([[1.0, np.nan, np.inf]], allow_nan=True)
