# Config validation (schema, then checks that need the file system), paths and input functions.
import re
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from layerwise import config as layerwise_config
from layerwise.extract import config_hash
from layerwise.models import needs_preparation


validate(config, "../schemas/config.schema.yaml")
try:
    layerwise_config.check(config)
except layerwise_config.ConfigError as exc:
    raise WorkflowError(f"Invalid config: {exc}")


R = config["results"]
C = config["corpus"]["name"]
OUT = f"{R}/{C}"
LOGS = f"{OUT}/logs"
SHARDS = [f"{i:03d}" for i in range(config["corpus"]["shards"])]
MODELS = {m["name"]: m for m in config["models"]}


wildcard_constraints:
    shard=r"\d{3}",
    model="|".join(re.escape(m) for m in MODELS),


def model_dir(model):
    """The folder or hub id an extraction job loads for `model`."""
    source = MODELS[model]["source"]
    return f"{R}/models/{model}" if needs_preparation(source) else source


def prepared_model(wildcards):
    """Input function: the prepared model folder, if this model needs one."""
    if wildcards.model not in MODELS:
        raise WorkflowError(f"unknown model {wildcards.model!r}; config models: {list(MODELS)}")
    source = MODELS[wildcards.model]["source"]
    return [f"{R}/models/{wildcards.model}"] if needs_preparation(source) else []


def extract_params(model):
    """Everything that changes a model's features; hashed into the HDF5 attributes."""
    m = MODELS[model]
    return {
        "source": m["source"],
        "revision": m.get("revision"),
        "sample_rate": config["audio"]["sample_rate"],
        **config["extract"],
    }


def features(model):
    return expand(f"{OUT}/features/{model}/shard-{{shard}}.h5", shard=SHARDS)


def rejection_records():
    """Every job's rejected-input record, in stage order."""
    return (
        [f"{OUT}/scan.rejected.tsv"]
        + expand(f"{OUT}/wav/shard-{{shard}}.rejected.tsv", shard=SHARDS)
        + expand(
            f"{OUT}/features/{{model}}/shard-{{shard}}.rejected.tsv",
            model=MODELS,
            shard=SHARDS,
        )
    )


def all_outputs():
    return [f"{OUT}/summary.txt", f"{OUT}/rejected.tsv"] + [
        h5 for m in MODELS for h5 in features(m)
    ]
