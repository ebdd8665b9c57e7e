# Corpus scan -> manifest; per shard: decode to 16 kHz mono WAV; summary of kept/rejected files.


rule corpus_scan:
    output:
        manifest=f"{OUT}/manifest.tsv",
        alignments=f"{OUT}/alignments.tsv",
        rejected=f"{OUT}/scan.rejected.tsv",
    log:
        f"{LOGS}/corpus_scan.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        corpus=config["corpus"],
        hf_audio_dir=f"{OUT}/hf_audio",
    script:
        "../scripts/corpus_scan.py"


rule audio_shard:
    input:
        manifest=f"{OUT}/manifest.tsv",
    output:
        wav=directory(f"{OUT}/wav/shard-{{shard}}"),
        table=f"{OUT}/wav/shard-{{shard}}.tsv",
        rejected=f"{OUT}/wav/shard-{{shard}}.rejected.tsv",
    log:
        f"{LOGS}/audio_shard/{{shard}}.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        audio=config["audio"],
    script:
        "../scripts/audio_shard.py"


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
