# Per (model, span, pooling): each analysis over all layers -> one tidy table;
# per model: the temporal tables of one utterance (from the feature store);
# per pair of models: cross-model similarity on the units both have.


rule analyse:
    input:
        pooled=f"{OUT}/pooled/{{model}}/{{span}}-{{pooling}}",
        mel=mel_input,
        features=similarity_features,
    output:
        report(
            f"{OUT}/tables/{{model}}/{{analysis}}-{{span}}-{{pooling}}.tsv",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{model}",
            labels={"model": "{model}", "table": "{analysis}, {span}-{pooling}"},
        ),
    log:
        f"{LOGS}/analyse/{{model}}-{{analysis}}-{{span}}-{{pooling}}.log",
    priority: analysis_priority
    conda:
        "../envs/layerwise.yaml"
    threads: analysis_threads
    params:
        settings=lambda wc: analysis_params(wc.analysis),
        labels=config["corpus"]["labels"],
        seed=config["seed"],
    script:
        "../scripts/analyse.py"


rule analyse_temporal:
    input:
        features=lambda wc: features(wc.model),
        alignments=f"{OUT}/alignments.tsv",
    output:
        selfsim=report(
            f"{OUT}/tables/{{model}}/temporal-selfsim.tsv",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{model}",
            labels={"model": "{model}", "table": "temporal, self-similarity"},
        ),
        trajectory=report(
            f"{OUT}/tables/{{model}}/temporal-trajectory.tsv",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{model}",
            labels={"model": "{model}", "table": "temporal, trajectory"},
        ),
    log:
        f"{LOGS}/analyse_temporal/{{model}}.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        settings=config["analysis"]["temporal"],
    script:
        "../scripts/analyse_temporal.py"


rule analyse_cross:
    input:
        pooled_a=f"{OUT}/pooled/{{model_a}}/{{span}}-{{pooling}}",
        pooled_b=f"{OUT}/pooled/{{model_b}}/{{span}}-{{pooling}}",
    output:
        report(
            f"{OUT}/tables/cross/{{model_a}}--{{model_b}}/similarity-{{span}}-{{pooling}}.tsv",
            caption="../report/table.rst",
            category="Tables",
            subcategory="cross-model",
            labels={
                "model": "{model_a} vs {model_b}",
                "table": "similarity, {span}-{pooling}",
            },
        ),
    log:
        f"{LOGS}/analyse_cross/{{model_a}}--{{model_b}}-{{span}}-{{pooling}}.log",
    priority: analysis_priority
    conda:
        "../envs/layerwise.yaml"
    threads: PARALLEL_THREADS
    params:
        settings=lambda wc: analysis_params("similarity"),
        seed=config["seed"],
    script:
        "../scripts/analyse_cross.py"
