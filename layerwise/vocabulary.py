"""The workflow's names: spans, poolings and layer names, defined once.

The library, the rules (wildcard constraints) and the schema use these. The schema is YAML and
cannot import them; ``tests/test_config.py`` checks that its enums and patterns equal these.
"""

from __future__ import annotations

import re

#: The units a pooled row stands for.
SPANS = ("utterance", "word", "phone", "frame")
#: How a unit's frames become one row (``layerwise.pool.pool_frames``).
POOLINGS = ("mean", "meanstd", "max", "center", "first", "last", "middle")
#: The frame span is not pooled: its one pooling name.
FRAME_POOLING = "mean"

#: Layer groups in model order: conv blocks, the feature projection, transformer layers.
LAYER_GROUPS = ("cnn", "proj", "layer")
#: A stored layer's name: ``cnn.i``, ``proj`` or ``layer.i``.
LAYER_NAME = r"cnn\.[0-9]+|proj|layer\.[0-9]+"
#: A layer selection in the config (``extract.layers``/``frames``): a group or one layer of it.
LAYER_SELECTION = r"^(cnn|proj|layer)(\.[0-9]+)?$"

_TRANSFORMER = re.compile(r"layer\.([0-9]+)")


def span_poolings(span: str, poolings) -> list[str]:
    """The poolings a span is pooled with: the configured ones, or the frame span's one."""
    return [FRAME_POOLING] if span == "frame" else list(poolings)


def layer_group(name: str) -> tuple[str, int | None]:
    """``cnn.3`` -> ``("cnn", 3)``, ``proj`` -> ``("proj", None)``; other names whole."""
    group, _, idx = str(name).partition(".")
    return group, int(idx) if idx.isdigit() else None


def layer_sort_key(name: str) -> tuple[int, int]:
    """Model order: cnn.* < proj < layer.* < anything else, numerically within a group."""
    group, idx = layer_group(name)
    order = LAYER_GROUPS.index(group) if group in LAYER_GROUPS else len(LAYER_GROUPS)
    return order, 0 if idx is None else idx


def layer_index(name: str) -> int | None:
    """Index within the transformer stack (``layer.i`` -> ``i``); None for other layers."""
    m = _TRANSFORMER.fullmatch(str(name))
    return int(m.group(1)) if m else None


def pick_evenly(items, n: int) -> list:
    """At most ``n`` items (layers, in model order), evenly spaced, keeping the first and
    the last."""
    items = list(items)
    if len(items) <= n:
        return items
    step = (len(items) - 1) / (n - 1) if n > 1 else 0
    return [items[i] for i in sorted({round(k * step) for k in range(n)})]
