"""The config schema's defaults, for tests and benchmarks that call the library directly.

The workflow gets its defaults from Snakemake's ``validate(config, schema)``; the library has
none of its own (its parameters are required), so a test or benchmark that calls it without
Snakemake takes them from here: the schema, filled in the same way (an object with a default
of ``{}`` gets its properties' defaults).
"""

from __future__ import annotations

import copy
import functools
import inspect
from functools import cache
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


@cache
def load_schema(path: Path = SCHEMA) -> dict:
    return yaml.safe_load(path.read_text())


def defaults(*section: str, schema: Path = SCHEMA) -> dict:
    """The defaults of one section, e.g. ``defaults("analysis", "probes")``; none: all."""
    node = load_schema(schema)
    for key in section:
        node = node["properties"][key]
    return _fill(node)


def _fill(node: dict) -> dict:
    out = {}
    for key, spec in node.get("properties", {}).items():
        if "properties" in spec and spec.get("default") == {}:
            out[key] = _fill(spec)
        elif "default" in spec:
            out[key] = copy.deepcopy(spec["default"])
    return out


def with_defaults(fn, section: str, *, rename: dict[str, str] | None = None, **overrides):
    """``fn`` (an analysis function) with the defaults of ``analysis.<section>`` bound as
    keywords, for tests that call it directly; ``rename`` maps a schema key to the function's
    keyword where they differ, ``overrides`` are the caller's own values."""
    rename = rename or {}
    accepted = inspect.signature(fn).parameters
    bound = {rename.get(k, k): v for k, v in defaults("analysis", section).items()}
    bound = {k: v for k, v in bound.items() if k in accepted}
    return functools.partial(fn, **{**bound, **overrides})
