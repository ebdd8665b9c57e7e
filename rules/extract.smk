# Per model: prepare non-hub sources once; per (model, shard): every layer into one HDF5 file
# (every frame, or with extract.store: pooled, the configured spans pooled in the job);
# then the summary of kept/rejected files over every stage's rejection records.


rule model_prepare:
    output:
        directory(f"{R}/models/{{model}}"),
    log:
        f"{R}/logs/model_prepare/{{model}}.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        source=lambda wc: MODELS[wc.model]["source"],
        seed=config["seed"],
    script:
        "../scripts/model_prepare.py"


rule extract_features:
    input:
        unpack(extract_units),
        model=prepared_model,
        wav=f"{OUT}/wav/shard-{{shard}}",
        table=f"{OUT}/wav/shard-{{shard}}.tsv",
    output:
        h5=f"{OUT}/features/{{model}}/shard-{{shard}}.h5",
        rejected=f"{OUT}/features/{{model}}/shard-{{shard}}.rejected.tsv",
    log:
        f"{LOGS}/extract_features/{{model}}-{{shard}}.log",
    priority: EXTRACT_PRIORITY
    conda:
        "../envs/layerwise.yaml"
    threads: PARALLEL_THREADS
    params:
        model_dir=lambda wc: model_dir(wc.model),
        extract=lambda wc: extract_params(wc.model),
        params_hash=lambda wc: config_hash(extract_params(wc.model)),
    script:
        "../scripts/extract_features.py"


rule summarise:
    input:
        manifest=f"{OUT}/manifest.tsv",
        records=rejection_records(),
        shard_tables=expand(f"{OUT}/wav/shard-{{shard}}.tsv", shard=SHARDS),
    output:
        rejected=f"{OUT}/rejected.tsv",
        summary=f"{OUT}/summary.txt",
    log:
        f"{LOGS}/summarise.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        models=list(MODELS),
    script:
        "../scripts/summarise.py"
