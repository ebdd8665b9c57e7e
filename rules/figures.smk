# One rule per figure family, drawing under results/<c>/plots/ (so a changed table redraws only
# its figures), and one cheap final rule that owns directory("figures") and assembles it.


rule plot_similarity:
    input:
        f"{OUT}/tables/{{model}}/similarity-{{span}}-{{pooling}}.tsv",
    output:
        report(
            f"{OUT}/plots/{{model}}/similarity-{{span}}-{{pooling}}.png",
            caption="../report/similarity.rst",
            category="Similarity",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "layer x layer, {span}-{pooling}"},
        ),
    log:
        f"{LOGS}/plot_similarity/{{model}}-{{span}}-{{pooling}}.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        corpus=C,
    script:
        "../scripts/plot_similarity.py"


rule plot_cross:
    input:
        f"{OUT}/tables/cross/{{model_a}}--{{model_b}}/similarity-{{span}}-{{pooling}}.tsv",
    output:
        report(
            f"{OUT}/plots/cross/{{model_a}}--{{model_b}}/similarity-{{span}}-{{pooling}}.png",
            caption="../report/cross.rst",
            category="Similarity",
            subcategory="cross-model",
            labels={
                "model": "{model_a} vs {model_b}",
                "figure": "cross-model, {span}-{pooling}",
            },
        ),
    log:
        f"{LOGS}/plot_cross/{{model_a}}--{{model_b}}-{{span}}-{{pooling}}.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        corpus=C,
    script:
        "../scripts/plot_cross.py"


rule plot_curves:
    input:
        unpack(curve_tables),
    output:
        report(
            f"{OUT}/plots/curves-{{span}}-{{pooling}}.png",
            caption="../report/curves.rst",
            category="Probes, convexity, CCA, clustering",
            labels={"model": "all models", "figure": "layer curves, {span}-{pooling}"},
        ),
    log:
        f"{LOGS}/plot_curves/{{span}}-{{pooling}}.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        corpus=C,
    script:
        "../scripts/plot_curves.py"


rule plot_featstats:
    input:
        f"{OUT}/tables/{{model}}/featstats-{{span}}-{{pooling}}.tsv",
    output:
        report(
            f"{OUT}/plots/{{model}}/featstats-{{span}}-{{pooling}}.png",
            caption="../report/featstats.rst",
            category="Feature statistics",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "statistics, {span}-{pooling}"},
        ),
    log:
        f"{LOGS}/plot_featstats/{{model}}-{{span}}-{{pooling}}.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        corpus=C,
    script:
        "../scripts/plot_featstats.py"


rule plot_maps:
    input:
        f"{OUT}/tables/{{model}}/embed-{{span}}-{{pooling}}.tsv",
    output:
        report(
            f"{OUT}/plots/{{model}}/maps-{{span}}-{{pooling}}-{{label}}.png",
            caption="../report/maps.rst",
            category="2-D maps",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "maps by {label}, {span}-{pooling}"},
        ),
    log:
        f"{LOGS}/plot_maps/{{model}}-{{span}}-{{pooling}}-{{label}}.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        corpus=C,
    script:
        "../scripts/plot_maps.py"


rule plot_temporal:
    input:
        selfsim=f"{OUT}/tables/{{model}}/temporal-selfsim.tsv",
        trajectory=f"{OUT}/tables/{{model}}/temporal-trajectory.tsv",
        alignments=f"{OUT}/alignments.tsv",
    output:
        selfsim=report(
            f"{OUT}/plots/{{model}}/temporal-selfsim.png",
            caption="../report/selfsim.rst",
            category="Temporal dynamics",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "frame self-similarity"},
        ),
        gif=report(
            f"{OUT}/plots/{{model}}/temporal-trajectory.gif",
            caption="../report/trajectory.rst",
            category="Temporal dynamics",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "trajectory across layers"},
        ),
    log:
        f"{LOGS}/plot_temporal/{{model}}.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        corpus=C,
    script:
        "../scripts/plot_temporal.py"


rule plot_summary:
    input:
        unpack(summary_tables),
    output:
        report(
            f"{OUT}/plots/{{model}}/summary.png",
            caption="../report/summary.rst",
            category="Summary",
            labels={"model": "{model}", "figure": "one-page summary"},
        ),
    log:
        f"{LOGS}/plot_summary/{{model}}.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        corpus=C,
        span_pooling=SPAN_POOLINGS[0],
    script:
        "../scripts/plot_summary.py"


# figures also needs every table, so the report that `snakemake --report` writes after
# `snakemake figures/` finds each table it declares.
rule figures:
    input:
        plots=plot_files(),
        tables=tables(),
    output:
        directory("figures"),
    log:
        f"{LOGS}/figures.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        corpus=C,
        plots_dir=lambda wc, input: os.path.commonpath(input.plots),
    script:
        "../scripts/figures.py"
