"""Checks of analysis inputs, done once at each public function, with one dtype policy.

Dtype policy (:func:`check_matrix`): booleans and integers become float64, float16 becomes
float32, float32 and float64 are kept as they are (no copy: layer matrices can be large);
``float64=True`` asks for float64 whatever the input (sums that need it, e.g. the similarity
metrics of one pair). Every matrix must be finite and 2-D. Errors are ``ValueError``\\ s that
name the argument.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def check_matrix(X, name: str = "X", *, min_rows: int = 1, min_cols: int = 1,
                 float64: bool = False) -> np.ndarray:
    """``X`` as a finite 2-D float array (the dtype policy above), or ``ValueError``."""
    arr = np.asarray(X)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must contain real numbers, got an array of dtype {arr.dtype}")
    check_shape(arr.shape, name, min_rows=min_rows, min_cols=min_cols)
    if float64 or arr.dtype.kind != "f":
        arr = arr.astype(np.float64, copy=False)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def check_shape(shape: tuple[int, ...], name: str = "X", *, min_rows: int = 1,
                min_cols: int = 1) -> None:
    """The shape rule of :func:`check_matrix` alone: what can be checked without the values."""
    if len(shape) != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features), got shape {shape}"
        )
    if shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {shape[0]}")
    if shape[1] < min_cols:
        raise ValueError(f"{name} needs at least {min_cols} feature columns, got shape {shape}")


def check_pair(X, Y, *, min_samples: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Two float64 matrices of matched rows (row i of X and of Y are the same sample)."""
    X = check_matrix(X, "X", min_rows=0, float64=True)
    Y = check_matrix(Y, "Y", min_rows=0, float64=True)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(
            "X and Y must have the same number of rows (one per matched sample), "
            f"got {X.shape[0]} and {Y.shape[0]}"
        )
    if X.shape[0] < min_samples:
        raise ValueError(f"X and Y need at least {min_samples} rows, got {X.shape[0]}")
    return X, Y


def check_layers(layers, name: str = "layers", *, min_rows: int = 1) -> dict[str, np.ndarray]:
    """A non-empty ``{layer name: (n, d) matrix}`` mapping whose matrices share their rows
    (every layer read at once; :func:`check_layer_shapes` and :func:`check_layer` check them
    one at a time)."""
    checked = ({str(k): check_layer(layers, k, name, min_rows=min_rows) for k in layers}
               if isinstance(layers, Mapping) else layers)  # else check_layer_shapes says so
    check_layer_shapes(checked, name, min_rows=min_rows)
    return checked


def check_layer_shapes(layers, name: str = "layers", *, min_rows: int = 1,
                       shapes: Mapping[str, tuple[int, ...]] | None = None) -> int:
    """The row count every layer of a non-empty mapping shares, checked from the shapes alone
    (``shapes``, by default those of the layers), so that a lazy mapping of layers
    (:class:`layerwise.analyses.subsample.Taken`) is not read; the values are
    :func:`check_layer`'s."""
    if not isinstance(layers, Mapping) or len(layers) == 0:
        raise ValueError(f"{name} must be a non-empty dict of layer name -> 2-D array")
    if shapes is None:
        shapes = {key: np.shape(X) for key, X in layers.items()}
    for key, layer_shape in shapes.items():
        check_shape(layer_shape, f"{name}[{key!r}]", min_rows=min_rows)
    n_rows = {layer_shape[0] for layer_shape in shapes.values()}
    if len(n_rows) != 1:
        raise ValueError(f"all matrices in {name} must have the same rows, got {sorted(n_rows)}")
    return n_rows.pop()


def check_layer(layers: Mapping, key, name: str = "layers", *, min_rows: int = 1) -> np.ndarray:
    """Layer ``key`` of ``layers`` read and checked (:func:`check_matrix`), named as
    :func:`check_layers` names it."""
    return check_matrix(layers[key], f"{name}[{key!r}]", min_rows=min_rows)


def check_labels(labels, *, n_rows: int, name: str = "labels") -> np.ndarray:
    """``labels`` as a 1-D array of ``n_rows`` non-missing values (objects as ``str``, so
    that ``np.unique`` can sort them)."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if len(arr) != n_rows:
        raise ValueError(f"{name} has {len(arr)} entries but {n_rows} were expected (one per row)")
    if pd.isna(arr).any():
        raise ValueError(f"{name} contains missing values")
    if arr.dtype == object:
        arr = arr.astype(str)
    return arr


def check_label_frame(labels_df, *, label_columns: Sequence[str] | str, n_rows: int,
                      name: str = "labels_df") -> dict[str, np.ndarray]:
    """``{column: labels}`` for the requested columns of a labels DataFrame (an empty
    ``label_columns`` gives an empty dict: nothing to analyse, not an error)."""
    if not isinstance(labels_df, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(labels_df).__name__}")
    columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
    missing = [col for col in columns if col not in labels_df.columns]
    if missing:
        raise ValueError(f"label_columns {missing} are not columns of {name}")
    if len(labels_df) != n_rows:
        raise ValueError(f"{name} has {len(labels_df)} rows but the layers have {n_rows}")
    return {col: check_labels(labels_df[col].to_numpy(), n_rows=n_rows, name=f"{name}[{col!r}]")
            for col in columns}


def check_int(value, name: str, *, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (``high`` None: no bound), or ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        upper = "inf" if high is None else str(high)
        raise ValueError(f"{name} must be an integer in [{low}, {upper}], got {value}")
    return int(value)


def check_real(value, name: str, *, low: float, high: float = math.inf, low_open: bool = False,
               high_open: bool = False) -> float:
    """``value`` as a float in the interval (bounds open or closed), or ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if math.isnan(value) or too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value
