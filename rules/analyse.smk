# Per (model, span, pooling): each analysis over all layers -> one tidy table;
# per pair of models: cross-model similarity on the units both have.


rule analyse:
    input:
        index=f"{OUT}/pooled/{{model}}/{{span}}-{{pooling}}/index.tsv",
        layers=pooled_layers,
        mel=mel_input,
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
        index_a=f"{OUT}/pooled/{{model_a}}/{{span}}-{{pooling}}/index.tsv",
        index_b=f"{OUT}/pooled/{{model_b}}/{{span}}-{{pooling}}/index.tsv",
        layers_a=lambda wc: pooled_layers(wc, wc.model_a),
        layers_b=lambda wc: pooled_layers(wc, wc.model_b),
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
