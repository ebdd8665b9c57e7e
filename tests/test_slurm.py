"""The workflow on SLURM: real sbatch on a one-node test cluster, with the user-facing profile.

Run with ``make test-slurm`` (root on Debian 12: ``tests/slurm/start.sh`` installs the
Debian packages when missing and starts munged, slurmctld and slurmd; the module fixture stops
them by PID, also on failure). The tests marked ``slurm`` check that

* the demo workflow (the bundled demo corpus with its word alignments and speaker labels, a
  tiny random wav2vec2, 2 shards, the Snakefile's default target: extraction, pooling, every
  analysis and every figure) run through ``sbatch`` with ``profiles/slurm`` + the test-only
  layer ``tests/slurm/profile`` gives the same outputs as a local run with ``profiles/local``:
  every layer's frames of every utterance bitwise, every table and every other output byte
  for byte (figures by presence);
* the jobs asked for what the profile says: the partition from ``LAYERWISE_SLURM_PARTITION``,
  a GPU of the type in ``LAYERWISE_SLURM_GPU_MODEL`` for extraction and for nothing else, one
  group job for the audio shards;
* a failing job (a model folder with config files but garbage weights: the config checks
  pass, the job fails) fails the run promptly, naming the job's log files, instead of leaving it waiting.

The three runs (local, SLURM, SLURM with the failing job) go side by side; most of a SLURM
run's time is waiting for the next status check. ``LAYERWISE_SLURM_TEST_QUICK=1`` stops both
runs after extraction (summary, rejections, features), for working on the profile.

``test_profiles_dry_run`` is not marked ``slurm``: ``make test`` dry-runs both profiles, so a
profile that no longer fits the rules is noticed without a cluster.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from layerwise.io import store

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
SLURM_PROFILE = REPO / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "profiles" / "local"
TEST_PROFILE = REPO / "tests" / "slurm" / "profile"
START = REPO / "tests" / "slurm" / "start.sh"
STOP = REPO / "tests" / "slurm" / "stop.sh"
STATE = Path(os.environ.get("LAYERWISE_SLURM_DIR", "/tmp/layerwise-slurm"))
PARTITION = "lwtest"  # the test cluster's partition that is *not* its default one
GPU_MODEL = "fakegpu"  # the type of the test cluster's fake GPUs
QUICK = os.environ.get("LAYERWISE_SLURM_TEST_QUICK") == "1"
# Upper bounds only (a run that hangs is killed and fails its test); on an idle 2-core machine
# the full runs take 2-5 minutes.
RUN_TIMEOUT = int(os.environ.get("LAYERWISE_SLURM_RUN_TIMEOUT", "600" if QUICK else "1800"))
FAIL_TIMEOUT = 600  # the run with the failing job must end by itself within this

OUT = "results/t"
SHARDS = ["000", "001"]
TARGETS = (
    [f"{OUT}/summary.txt", f"{OUT}/rejected.tsv"]
    + [f"{OUT}/features/tiny/shard-{s}.h5" for s in SHARDS]
    if QUICK
    else []  # the Snakefile's default target
)
DEMO = REPO / "resources" / "demo"
CONFIG = {  # the default config.yaml's corpus, with one tiny model
    "corpus": {
        "name": "t",
        "source": "librispeech",
        "path": str(DEMO / "LibriSpeech" / "dev-clean"),
        "alignments": str(DEMO / "alignments"),
        "label_table": {"path": str(DEMO / "speakers.tsv"), "on": "speaker"},
        "labels": ["speaker", "gender", "accent"],
        "shards": 2,
    },
    "models": [{"name": "tiny", "source": "random:tiny-wav2vec2"}],
    "pool": {"spans": ["utterance", "word"]},
}
BROKEN_TARGET = f"{OUT}/features/broken/shard-000.h5"
BROKEN_LOG = f"{OUT}/logs/extract_features/broken-000.log"
IMAGES = {".png", ".gif", ".pdf", ".svg", ".jpg"}  # compared by presence only


# --------------------------------------------------------------------------- helpers


def snakemake_cmd() -> list[str]:
    """The snakemake of this interpreter's environment (its jobs then run in the same one)."""
    exe = Path(sys.executable).parent / "snakemake"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


def clean_env(**extra: str) -> dict:
    """This environment without SLURM, profile and layerwise-site variables, plus ``extra``."""
    drop = ("SLURM_", "SBATCH_", "SRUN_", "LAYERWISE_SLURM_", "SNAKEMAKE_PROFILE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def slurm_env() -> dict:
    return clean_env(SLURM_CONF=str(STATE / "slurm.conf"), LAYERWISE_SLURM_PARTITION=PARTITION,
                     LAYERWISE_SLURM_GPU_MODEL=GPU_MODEL)


def make_workdir(root: Path, config: dict = CONFIG) -> Path:
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def snakemake_args(workdir: Path, *profiles: Path, targets=TARGETS, options=()) -> list[str]:
    cmd = snakemake_cmd() + ["-s", str(SNAKEFILE), "--directory", str(workdir)]
    cmd += ["--configfile", str(workdir / "config.yaml"), *options]
    for p in profiles:
        cmd += ["--profile", str(p)]
    return cmd + list(targets)


@dataclass
class Run:
    """One snakemake process, started now, its output in a file."""

    name: str
    workdir: Path
    cmd: list[str]
    env: dict
    timeout: float

    def __post_init__(self):
        self.log = self.workdir.parent / f"{self.name}.out"
        self._fh = self.log.open("w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self._fh,
                                     stderr=subprocess.STDOUT, text=True)
        self.returncode = None
        self.seconds = None

    def poll(self) -> bool:
        """True once the process has ended (or was killed for running past its timeout)."""
        if self.returncode is None:
            code = self.proc.poll()
            if code is None and time.monotonic() - self.t0 > self.timeout:
                self.proc.kill()  # its SLURM jobs are cancelled when the cluster stops
                self.proc.wait()
                code = "timeout"
            if code is not None:
                self.returncode, self.seconds = code, time.monotonic() - self.t0
                self._fh.close()
        return self.returncode is not None

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def check(self):
        if self.returncode == "timeout":
            pytest.fail(f"{self.name} run did not end within {self.timeout:.0f} s (hung?):\n"
                        f"{self.output[-5000:]}")


def same_threads() -> list[str]:
    """The local run's extraction gets the SLURM profile's thread count.

    On the CPU, features depend on torch's thread count (float16 rounding of the transformer
    layers differs between 2 and 4 threads), so both sides must use the same. Both are capped
    by the machine's cores: locally by ``cores: all``, under SLURM by the job step's
    ``--cores all`` (this test cluster does not confine jobs to their CPUs). A command-line
    ``--set-threads`` replaces the profile's whole list, so the local run's analyses keep the
    rules' thread counts too (``profiles/local`` gives them one core each), as under SLURM:
    similarity's tables differ in the last bits between one thread and two.
    """
    settings = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())
    return ["--set-threads", f"extract_features={settings['set-threads']['extract_features']}"]


def squeue_rows() -> list[dict]:
    """The test cluster's jobs of the last MinJobAge (3600 s: the whole test), finished ones too."""
    fields = ["JobID", "Name", "Partition", "tres-per-job", "State", "Comment"]
    fmt = ",".join(f"{f}:|" for f in fields)
    out = subprocess.run(["squeue", "--states=all", "-h", "-O", fmt], env=slurm_env(),
                         capture_output=True, text=True, check=True, timeout=30).stdout
    rows = []
    for line in out.splitlines():
        values = [v.strip() for v in line.split("|")][: len(fields)]
        if len(values) == len(fields):
            rows.append(dict(zip(fields, values, strict=True)))
    return rows


def compare_results(a: Path, b: Path) -> None:
    """Everything under a/results equals b/results (logs and image bytes aside), and both
    runs assembled the same figures/."""

    def files(root: Path) -> list[Path]:
        return sorted(
            p.relative_to(root)
            for p in root.rglob("*")
            if p.is_file() and "logs" not in p.parts and p.name != ".snakemake_timestamp"
        )

    ra, rb = a / "results", b / "results"
    fa, fb = files(ra), files(rb)
    assert fa == fb, f"only local: {set(fa) - set(fb)}; only SLURM: {set(fb) - set(fa)}"
    for rel in fa:
        pa, pb = ra / rel, rb / rel
        if rel.suffix == ".h5":
            compare_features(pa, pb)
        elif rel.suffix not in IMAGES and pa.read_bytes() != pb.read_bytes():
            if rel.suffix == ".tsv":  # say where
                pd.testing.assert_frame_equal(pd.read_csv(pa, sep="\t"),
                                              pd.read_csv(pb, sep="\t"), obj=str(rel))
            raise AssertionError(f"{rel}: the local and the SLURM file differ")
    assert sum(p.suffix == ".h5" and p.parts[1] == "features" for p in fa) == len(SHARDS)
    if not QUICK:  # the analyses ran: tables of every analysis, figures on both sides
        tables = {p.name.split("-")[0] for p in fa if "tables" in p.parts}
        assert {"similarity", "probes", "convexity", "clustering", "featstats", "embed",
                "cca"} <= tables, tables
        figs_a, figs_b = files(a / "figures"), files(b / "figures")
        assert figs_a == figs_b and Path("t/index.html") in figs_a, (figs_a, figs_b)


def submissions(workdir: Path) -> dict[Path, set[str]]:
    """``{SLURM log: outputs of the jobs it ran}`` from every SLURM job log of a run.

    A job step's log holds snakemake's own report of each job it ran (``rule x:`` then
    ``output: a, b``); the sbatch wrapper and the srun step both print it, hence a set.
    """
    out = {}
    for log in sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log")):
        text = log.read_text(errors="replace")
        out[log] = {path.strip() for line in re.findall(r"^\s+output: (.+)$", text, re.M)
                    for path in line.split(",")}
    return out


def compare_features(a: Path, b: Path) -> None:
    fa, fb = store.open(a), store.open(b)
    assert fa.layers == fb.layers, a.name
    assert fa.utt_ids == fb.utt_ids, a.name
    assert fa.attrs["config_hash"] == fb.attrs["config_hash"], a.name
    for layer in fa.layers:
        assert fa.layer_info(layer) == fb.layer_info(layer), f"{a.name} {layer}"
        for utt in fa.utt_ids:
            np.testing.assert_array_equal(fa.frames(layer, utt), fb.frames(layer, utt),
                                          err_msg=f"{a.name} {layer} {utt}")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster():
    """A one-node SLURM for this module; stopped by the PIDs start.sh recorded, come what may."""
    try:
        started = subprocess.run(["bash", str(START), str(STATE)], capture_output=True, text=True,
                                 timeout=900)
        if started.returncode != 0:
            pytest.fail(f"tests/slurm/start.sh failed ({started.returncode}):\n"
                        f"{started.stdout}\n{started.stderr}")
        yield STATE
    finally:
        subprocess.run(["bash", str(STOP), str(STATE)], timeout=180)


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory) -> dict:
    """Local run, SLURM run, and SLURM run with a failing job, side by side."""
    root = tmp_path_factory.mktemp("runs")
    local = make_workdir(root / "local")
    slurm = make_workdir(root / "slurm")
    broken_model = root / "broken-model"  # has the files the config checks ask for; no weights
    broken_model.mkdir()
    (broken_model / "config.json").write_text('{"model_type": "wav2vec2"}')
    (broken_model / "preprocessor_config.json").write_text(
        '{"feature_extractor_type": "Wav2Vec2FeatureExtractor"}')
    (broken_model / "model.safetensors").write_text("not weights")
    broken_config = {**CONFIG, "models": [{"name": "broken", "source": str(broken_model)}]}
    broken = make_workdir(root / "broken", broken_config)
    started = [
        Run("slurm", slurm, snakemake_args(slurm, SLURM_PROFILE, TEST_PROFILE), slurm_env(),
            RUN_TIMEOUT),
        Run("broken", broken,
            snakemake_args(broken, SLURM_PROFILE, TEST_PROFILE, targets=[BROKEN_TARGET]),
            slurm_env(), FAIL_TIMEOUT),
        Run("local", local, snakemake_args(local, LOCAL_PROFILE, options=same_threads()),
            clean_env(), RUN_TIMEOUT),
    ]
    while not all([r.poll() for r in started]):
        time.sleep(0.5)
    done = {r.name: r for r in started}
    for r in done.values():
        print(f"\n[test_slurm] {r.name} run: exit {r.returncode} after {r.seconds:.0f} s"
              f" (output: {r.log})", end="")
    done["jobs"] = squeue_rows()
    return done


# --------------------------------------------------------------------------- tests


@pytest.mark.slurm
def test_slurm_run_equals_local_run(runs):
    for name in ("local", "slurm"):
        runs[name].check()
        assert runs[name].returncode == 0, f"{name} run failed:\n{runs[name].output[-6000:]}"
    assert "has been submitted with SLURM jobid" in runs["slurm"].output
    compare_results(runs["local"].workdir, runs["slurm"].workdir)


@pytest.mark.slurm
def test_jobs_ask_for_what_the_profile_says(runs):
    log = runs["slurm"].output
    # the audio shards went in one group job (one sbatch), not one sbatch each
    assert "slurm_logs/group_audio_audio_shard/" in log, "no audio_shard group job"
    assert "slurm_logs/rule_audio_shard/" not in log
    # every job of the test (squeue keeps them for MinJobAge = 3600 s) ran where the profile sent it
    ours = [r for r in runs["jobs"] if r["Name"].startswith("layerwise_")]
    assert len(ours) >= 4, runs["jobs"]
    assert {r["Partition"] for r in ours} == {PARTITION}, ours
    extract = [r for r in ours if r["Comment"].startswith("rule_extract_features")]
    assert extract, ours
    for row in extract:
        assert row["tres-per-job"] == f"gres:gpu:{GPU_MODEL}:1", row
    others = [r for r in ours if not r["Comment"].startswith("rule_extract_features")]
    assert all("gpu" not in r["tres-per-job"] for r in others), others


@pytest.mark.slurm
def test_no_job_is_submitted_twice(runs):
    """Each job's outputs appear in exactly one SLURM submission (group jobs included).

    Job groups + a checkpoint made the SLURM plugin submit a pending job in two group jobs
    (plugin issue #253); the workflow has no checkpoint since (docs/cluster.md).
    """
    run = runs["slurm"]
    logs = submissions(run.workdir)
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", run.output)
    assert len(logs) == len(submitted) > 0, (sorted(logs), submitted)
    seen: dict[str, Path] = {}
    for log, outputs in logs.items():
        assert outputs, f"{log}: no job in this SLURM log"
        for path in outputs:
            assert path not in seen, f"{path} was made by two submissions: {seen[path]} and {log}"
            seen[path] = log
    groups = [log for log in logs if log.parent.name.startswith("group_")]
    assert any("plots" in log.parent.name for log in groups), sorted(logs)


@pytest.mark.slurm
def test_failing_job_fails_the_run_and_names_its_log(runs):
    """An extraction job whose model weights are garbage: config checks pass, the job fails."""
    run = runs["broken"]
    run.check()  # ended (did not hang)
    out = run.output
    assert run.returncode != 0, out[-5000:]
    assert "Error in rule extract_features" in out, out[-5000:]
    assert BROKEN_LOG in out, f"the job's log path is not in the message:\n{out[-5000:]}"
    slurm_log = re.search(
        r"/\S*/\.snakemake/slurm_logs/rule_extract_features/broken_000/\d+\.log", out
    )
    assert slurm_log, f"the SLURM log path is not in the message:\n{out[-5000:]}"
    assert Path(slurm_log.group(0)).is_file()
    text = (run.workdir / BROKEN_LOG).read_text()
    assert "Traceback" in text, text
    assert not (run.workdir / BROKEN_TARGET).exists()


def test_profiles_dry_run(tmp_path):
    """Both profiles parse and fit the workflow's rules (a dry run: no SLURM needed)."""
    work = make_workdir(tmp_path / "work")
    known = {
        m.group(1)
        for smk in [SNAKEFILE, *sorted((REPO / "rules").glob("*.smk"))]
        for m in re.finditer(r"^(?:rule|checkpoint)\s+(\w+)\s*:", smk.read_text(), re.M)
    }
    assert "extract_features" in known
    for profile in (SLURM_PROFILE, LOCAL_PROFILE):
        settings = yaml.safe_load((profile / "config.yaml").read_text())
        for section in ("set-threads", "set-resources", "groups"):
            unknown = set(settings.get(section) or {}) - known
            assert not unknown, f"{profile.name}/{section}: no such rule(s) {unknown}"
    # site settings from the environment; "all" must stay a string, not Python's all()
    env = clean_env(LAYERWISE_SLURM_PARTITION="all", LAYERWISE_SLURM_GPU_PARTITION="gpu-a",
                    LAYERWISE_SLURM_GPU_MODEL="a100", LAYERWISE_SLURM_ACCOUNT="proj-1")
    target = f"{OUT}/features/tiny/shard-000.h5"
    dry = subprocess.run(snakemake_args(work, SLURM_PROFILE, targets=[target]) + ["-n"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-4000:]
    jobs = {m.group(1): m.group(2) for m in
            re.finditer(r"^rule (\w+):\n((?:    .*\n)+)", dry.stdout, re.M)}
    extract, scan = jobs["extract_features"], jobs["corpus_scan"]
    for want in ("gpu=1", "gpu_model=a100", "slurm_partition=gpu-a", "slurm_account=proj-1"):
        assert want in extract, extract
    assert "threads: 4" in extract, extract
    assert "slurm_partition=all" in scan and "gpu" not in scan, scan
    local = subprocess.run(snakemake_args(work, LOCAL_PROFILE, targets=[target]) + ["-n"],
                           env=clean_env(), capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr[-4000:]
    assert "gpu=1" in local.stdout
