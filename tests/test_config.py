"""A bad config stops before any job runs, with a message naming the key."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from layerwise.config import ConfigError, check

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "schemas" / "config.schema.yaml")


def _default():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def _validate(cfg):
    validate(cfg, SCHEMA)
    check(cfg, base=REPO)
    return cfg


def test_default_config_is_valid_and_gets_defaults():
    cfg = _validate(_default())
    assert cfg["extract"]["compression"] is None
    assert cfg["analysis"]["probes"]["folds"] == 5
    assert cfg["audio"]["min_seconds"] == 0.025


@pytest.mark.parametrize(
    "edit,key",
    [
        (lambda c: c["corpus"].update(limt=3), "limt"),  # unknown key (a typo)
        (lambda c: c["extract"].update(batch_seconds="lots"), "batch_seconds"),  # wrong type
        (lambda c: c["corpus"].update(limit=-1), "limit"),
        (lambda c: c["corpus"].update(source="youtube"), "source"),
        (lambda c: c["corpus"].update(path="no/such/folder"), "corpus.path"),
        (lambda c: c["corpus"].update(alignments="no/such/tg"), "corpus.alignments"),
        (lambda c: c["models"].append(dict(c["models"][0])), "models[2].name"),
        (lambda c: c["models"][0].update(source="random:nonexistent"), "models[0].source"),
        (lambda c: c["extract"].update(frames=["cnn"], layers=["layer"]), "extract.frames"),
        (lambda c: c["extract"].update(store="pooled-frames"), "store"),
    ],
)
def test_bad_config_names_the_key(edit, key):
    cfg = copy.deepcopy(_default())
    edit(cfg)
    with pytest.raises((WorkflowError, ConfigError)) as err:
        _validate(cfg)
    text = str(err.value) + "".join(str(a) for a in getattr(err.value, "args", ()))
    assert key.split(".")[-1].split("[")[0] in text, text


def test_bad_config_stops_snakemake_before_any_job(tmp_path):
    cfg = _default()
    cfg["corpus"]["limt"] = 3
    cfg["results"] = str(tmp_path / "results")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(tmp_path / "bad.yaml")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "limt" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_dry_run_of_default_config_lists_the_dag():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--quiet", "rules"], cwd=REPO,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    for rule in ("corpus_scan", "audio_shard", "extract_features", "summarise"):
        assert rule in out


def test_schema_names_equal_the_vocabulary_and_the_registry():
    """The schema is YAML and cannot import: its enums and patterns are checked against the
    one definition each (layerwise.vocabulary, layerwise.analyses.registry)."""
    from benchmarks.schema import load_schema
    from layerwise import vocabulary
    from layerwise.analyses.registry import REGISTRY

    props = load_schema()["properties"]
    pool, extract = props["pool"]["properties"], props["extract"]["properties"]
    assert tuple(pool["spans"]["items"]["enum"]) == vocabulary.SPANS
    assert tuple(pool["poolings"]["items"]["enum"]) == vocabulary.POOLINGS
    for key in ("layers", "frames"):
        assert extract[key]["items"]["pattern"] == vocabulary.LAYER_SELECTION
    sections = set(props["analysis"]["properties"]) - {"cross_model", "temporal"}
    assert sections == {a.section for a in REGISTRY.values()}
    assert all(set(a.spans) <= set(vocabulary.SPANS) for a in REGISTRY.values())


def test_layer_names_and_order():
    from layerwise import vocabulary

    names = ["layer.10", "proj", "cnn.1", "layer.2", "cnn.0", "other"]
    assert sorted(names, key=vocabulary.layer_sort_key) == [
        "cnn.0", "cnn.1", "proj", "layer.2", "layer.10", "other"]
    assert [vocabulary.layer_index(n) for n in ("layer.12", "cnn.3", "proj")] == [12, None, None]
    full = re.compile(f"^(?:{vocabulary.LAYER_NAME})$")
    assert all(full.match(n) for n in ("cnn.0", "proj", "layer.12"))
    assert not any(full.match(n) for n in ("cnn", "layer", "proj.1", "layer.x"))
