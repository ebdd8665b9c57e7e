# Per (model, span, pooling): each analysis over all layers -> one tidy table;
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
    conda:
        "../envs/layerwise.yaml"
    threads: 2
    params:
        settings=lambda wc: analysis_params(wc.analysis),
        labels=config["corpus"]["labels"],
        seed=config["seed"],
    script:
        "../scripts/analyse.py"


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
    conda:
        "../envs/layerwise.yaml"
    threads: 2
    params:
        settings=lambda wc: analysis_params("similarity"),
        seed=config["seed"],
    script:
        "../scripts/analyse_cross.py"
