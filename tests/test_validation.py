"""The one dtype policy of analysis inputs (layerwise.analyses.validation)."""

from __future__ import annotations

import numpy as np
import pytest

from layerwise.analyses.validation import check_int, check_layers, check_matrix


def test_dtype_policy():
    f32 = np.ones((3, 2), dtype=np.float32)
    assert check_matrix(f32) is f32  # large layer matrices are not copied
    f64 = np.ones((3, 2))
    assert check_matrix(f64) is f64
    assert check_matrix(np.ones((3, 2), dtype=np.float16)).dtype == np.float32
    assert check_matrix(np.ones((3, 2), dtype=np.int32)).dtype == np.float64
    assert check_matrix(np.ones((3, 2), dtype=bool)).dtype == np.float64
    assert check_matrix(f32, float64=True).dtype == np.float64
    assert check_layers({"a": f32})["a"] is f32


@pytest.mark.parametrize(("value", "kwargs", "match"), [
    (np.array([["x", "y"]]), {}, "^M must contain real numbers"),
    (np.ones(3), {}, r"^M must be a 2-D array"),
    (np.array([[1.0, np.nan]]), {}, "^M contains NaN or infinity"),
    (np.ones((1, 2)), {"min_rows": 2}, "^M needs at least 2 rows"),
    (np.ones((2, 1)), {"min_cols": 2}, "^M needs at least 2 feature columns"),
])
def test_bad_matrices_name_the_argument(value, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_matrix(value, "M", **kwargs)


def test_integers():
    assert check_int(np.int64(3), "k", low=1) == 3
    for bad in (True, 2.0, 0):
        with pytest.raises(ValueError, match="^k must be an integer"):
            check_int(bad, "k", low=1)
