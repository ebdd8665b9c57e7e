# layerwise: every layer of speech models over a corpus, and how the representation changes.
# This file only includes the stages; rules/common.smk validates the config and names the paths.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/ingest.smk"
include: "rules/extract.smk"
include: "rules/pool.smk"
include: "rules/analyse.smk"
include: "rules/figures.smk"


localrules:
    figures,


rule all:
    default_target: True
    input:
        all_outputs(),
