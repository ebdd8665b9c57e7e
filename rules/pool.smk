# Per (model, span, pooling): the rows (units) and every layer pooled onto them, in one folder
# (layerwise.io.pooled); per model: the log-mel target of its frame rows.
#
# One job pools every layer: the layer list is read from the feature files inside the job, so
# the DAG never waits for it (no checkpoint; docs/cluster.md says why that matters on SLURM).


rule pool_layers:
    input:
        features=lambda wc: features(wc.model),
        manifest=f"{OUT}/manifest.tsv",
        alignments=f"{OUT}/alignments.tsv",
    output:
        directory(f"{OUT}/pooled/{{model}}/{{span}}-{{pooling}}"),
    log:
        f"{LOGS}/pool_layers/{{model}}-{{span}}-{{pooling}}.log",
    priority: UPSTREAM_PRIORITY
    conda:
        "../envs/layerwise.yaml"
    params:
        labels=config["corpus"]["labels"],
        max_frames=config["pool"]["max_frames"],
        seed=config["seed"],
    script:
        "../scripts/pool_layers.py"


rule pool_mel:
    input:
        pooled=f"{OUT}/pooled/{{model}}/frame-mean",
        shard_tables=expand(f"{OUT}/wav/shard-{{shard}}.tsv", shard=SHARDS),
    output:
        f"{OUT}/pooled/{{model}}/frame-mean.logmel.npy",
    log:
        f"{LOGS}/pool_mel/{{model}}.log",
    priority: UPSTREAM_PRIORITY
    conda:
        "../envs/layerwise.yaml"
    params:
        sample_rate=config["audio"]["sample_rate"],
    script:
        "../scripts/pool_mel.py"
