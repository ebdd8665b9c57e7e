"""Checks of config.yaml that a JSON schema cannot express, run before any job is scheduled.

The schema (``schemas/config.schema.yaml``) catches unknown keys, wrong types and bad values;
this module catches what needs the file system or cross-key knowledge: paths that do not exist,
duplicate model names, unknown model presets, model folders without a feature extractor, hub
ids missing from the local cache in offline mode, label tables with duplicate keys. Each error
names the key and what was expected.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from layerwise.extract.ct2 import PYPI_MODELS
from layerwise.extract.models import PRESETS, ModelSourceError, check_loadable

NEEDS_PATH = {"librispeech": "folder", "folder": "folder", "manifest": "file"}


def config_hash(params: dict) -> str:
    """A short, stable hash of everything that changes the features (stored in the HDF5)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class ConfigError(ValueError):
    """A config value that cannot work; the message starts with the key."""


def check(config: dict, *, base: str | Path = ".") -> None:
    """Raise :class:`ConfigError` for the first problem found in a schema-valid config."""
    base = Path(base)
    corpus = config["corpus"]
    source = corpus["source"]
    path = corpus.get("path")
    if source in NEEDS_PATH:
        kind = NEEDS_PATH[source]
        if not path:
            raise ConfigError(f"config key corpus.path: required for corpus.source = {source}")
        p = base / path
        if (kind == "folder" and not p.is_dir()) or (kind == "file" and not p.is_file()):
            raise ConfigError(f"config key corpus.path: {kind} '{path}' does not exist")
    if source == "hf" and not path and not corpus.get("hf", {}).get("dataset"):
        raise ConfigError("config key corpus.hf.dataset: required when corpus.path is not given")
    if corpus.get("alignments") and not (base / corpus["alignments"]).exists():
        raise ConfigError(
            f"config key corpus.alignments: '{corpus['alignments']}' does not exist "
            "(expected a folder of TextGrid files or a .ctm file)"
        )
    table = corpus.get("label_table")
    if table:
        _check_label_table(base / table["path"], table["on"], table["path"])
    names = [m["name"] for m in config["models"]]
    for i, model in enumerate(config["models"]):
        check_model_source(model["source"], f"models[{i}].source", base, model.get("revision"))
        if names.count(model["name"]) > 1:
            raise ConfigError(f"config key models[{i}].name: '{model['name']}' is used twice")
    extract = config.get("extract", {})
    groups = {s.split(".")[0] for s in extract.get("layers", [])}
    for item in extract.get("frames", []):
        if item not in extract.get("layers", []) and item.split(".")[0] not in groups:
            raise ConfigError(
                f"config key extract.frames: '{item}' is not among extract.layers "
                f"({', '.join(extract.get('layers', []))})"
            )


def _check_label_table(path: Path, key: str, name: str) -> None:
    from layerwise.ingest.corpus import LabelTableError, read_label_table

    if not path.is_file():
        raise ConfigError(f"config key corpus.label_table.path: file '{name}' does not exist")
    try:
        read_label_table(path, key)
    except LabelTableError as exc:
        raise ConfigError(f"config key corpus.label_table: {exc}") from None


def check_model_source(source: str, key: str, base: Path, revision: str | None = None) -> None:
    """Presets, packages and files a model source needs, known before any job runs."""
    if source.startswith("random:"):
        preset = source.removeprefix("random:")
        if preset not in PRESETS:
            raise ConfigError(
                f"config key {key}: unknown preset '{preset}' (known: {', '.join(sorted(PRESETS))})"
            )
    elif source.startswith("pypi:"):
        pkg = source.removeprefix("pypi:")
        if pkg not in PYPI_MODELS:
            raise ConfigError(
                f"config key {key}: unknown package '{pkg}' (known: {', '.join(sorted(PYPI_MODELS))})"
            )
    elif source.startswith("ct2:"):
        if not (base / source.removeprefix("ct2:") / "model.bin").is_file():
            raise ConfigError(f"config key {key}: no model.bin in '{source.removeprefix('ct2:')}'")
    else:
        try:
            check_loadable(source, revision=revision, base=base)
        except ModelSourceError as exc:
            raise ConfigError(f"config key {key}: {exc}") from None
