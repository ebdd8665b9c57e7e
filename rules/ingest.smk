# Corpus scan -> manifest (and, for a Hugging Face dataset, its audio written out as files);
# per shard: decode to 16 kHz mono WAV.


rule corpus_scan:
    output:
        manifest=f"{OUT}/manifest.tsv",
        alignments=f"{OUT}/alignments.tsv",
        rejected=f"{OUT}/scan.rejected.tsv",
        hf_audio=directory(f"{OUT}/hf_audio"),
    log:
        f"{LOGS}/corpus_scan.log",
    conda:
        "../envs/layerwise.yaml"
    params:
        corpus=config["corpus"],
    script:
        "../scripts/corpus_scan.py"


rule audio_shard:
    input:
        manifest=f"{OUT}/manifest.tsv",
        hf_audio=f"{OUT}/hf_audio",
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
