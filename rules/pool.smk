# Per model: its layer list (a checkpoint); per (model, span, pooling): the row index;
# per (model, span, pooling, layer): one pooled matrix.


checkpoint model_layers:
    input:
        model=prepared_model,
    output:
        f"{R}/layers/{{model}}.tsv",
    log:
        f"{R}/logs/model_layers/{{model}}.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        model_dir=lambda wc: model_dir(wc.model),
        revision=lambda wc: MODELS[wc.model].get("revision"),
        layers=config["extract"]["layers"],
        frames=config["extract"]["frames"],
    script:
        "../scripts/model_layers.py"


rule pool_index:
    input:
        features=lambda wc: features(wc.model),
        manifest=f"{OUT}/manifest.tsv",
        alignments=f"{OUT}/alignments.tsv",
    output:
        f"{OUT}/pooled/{{model}}/{{span}}-{{pooling}}/index.tsv",
    log:
        f"{LOGS}/pool_index/{{model}}-{{span}}-{{pooling}}.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        labels=config["corpus"]["labels"],
        max_frames=config["pool"]["max_frames"],
        seed=config["seed"],
    script:
        "../scripts/pool_index.py"


rule pool_layer:
    input:
        features=lambda wc: features(wc.model),
        index=f"{OUT}/pooled/{{model}}/{{span}}-{{pooling}}/index.tsv",
    output:
        f"{OUT}/pooled/{{model}}/{{span}}-{{pooling}}/{{layer}}.npy",
    log:
        f"{LOGS}/pool_layer/{{model}}-{{span}}-{{pooling}}-{{layer}}.log",
    conda:
        "../envs/layerwise.yaml"
    script:
        "../scripts/pool_layer.py"


rule pool_mel:
    input:
        index=f"{OUT}/pooled/{{model}}/frame-mean/index.tsv",
        shard_tables=expand(f"{OUT}/wav/shard-{{shard}}.tsv", shard=SHARDS),
    output:
        f"{OUT}/pooled/{{model}}/frame-mean/logmel.npy",
    log:
        f"{LOGS}/pool_mel/{{model}}.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        sample_rate=config["audio"]["sample_rate"],
    script:
        "../scripts/pool_mel.py"
