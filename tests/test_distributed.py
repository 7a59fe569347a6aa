"""The loop under `accelerate launch` with 2 CPU processes (gloo) equals one process: global token-mean, with the
model replicated (gradients all-reduced by hand) or sharded (FSDP2: parameters, gradients, AdamW states); under FSDP
the in-training evaluation runs on rank 0 with the gathered model, and a run killed and restarted ends as if never
killed."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from psftlib.config import ROOT
from psftlib.train import FAULT_ENV, TIMING_KEYS


def _launch(out: Path, processes: int, *extra: str, fault: str | None = None, port: int = 29531):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    env.pop(FAULT_ENV, None)
    if fault is not None:
        env[FAULT_ENV] = fault
    args = ["-m", "psftlib.train", "--profile", "smoke", "--run", "psft", "--out", str(out), "--set", "epochs=2.0",
            "micro_batch_size=1", *extra]  # fmt: skip
    if processes == 1:
        cmd = [sys.executable, *args]
    else:
        accelerate = str(Path(sys.executable).parent / "accelerate")
        cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), *args]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "fsdp"])
def test_two_processes_give_the_same_losses_and_weights_as_one(smoke_world_in_results, tmp_path, fsdp):
    extra = ["fsdp=true"] if fsdp else []
    one = _launch(tmp_path / "one", 1, *extra)  # one process: fsdp has nothing to shard, the plain loop runs
    assert one.returncode == 0, one.stderr[-3000:]
    two = _launch(tmp_path / "two", 2, *extra)
    assert two.returncode == 0, two.stderr[-3000:]

    assert json.loads((tmp_path / "two" / "config.json").read_text())["processes"] == 2  # really two ranks
    # the in-training evaluation (smoke: every train batch) ran on rank 0, under FSDP with the gathered model
    ea = pd.read_json(tmp_path / "one" / "eval.jsonl", lines=True)
    eb = pd.read_json(tmp_path / "two" / "eval.jsonl", lines=True)
    assert list(eb["step"]) == [0, 4, 8, 12, 16] and list(ea.columns) == list(eb.columns)
    for col in ea.columns:  # teacher-forced NLL / entropy of held-out and trained demos, task scores
        pd.testing.assert_series_equal(ea[col], eb[col], rtol=1e-4, atol=1e-6, check_names=False)
    a = pd.read_json(tmp_path / "one" / "metrics.jsonl", lines=True)
    b = pd.read_json(tmp_path / "two" / "metrics.jsonl", lines=True)
    for col in ("loss", "nll", "entropy", "clip_fraction_high", "ratio_mean", "ratio_max", "grad_norm"):
        pd.testing.assert_series_equal(a[col], b[col], rtol=1e-4, atol=1e-6, check_names=False)
    assert (a["tokens"] == b["tokens"]).all() and (a["trained_tokens"] == b["trained_tokens"]).all()
    wa = load_file(tmp_path / "one" / "checkpoint" / "model.safetensors")
    wb = load_file(tmp_path / "two" / "checkpoint" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


def _stream(path: Path) -> list[str]:
    """A metrics stream's lines without the timing keys (the only values a repeated run may change)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [json.dumps({k: v for k, v in row.items() if k not in TIMING_KEYS}) for row in rows]


@pytest.mark.slow
def test_fsdp_two_processes_killed_and_restarted_end_as_an_uninterrupted_run(
    smoke_world_in_results, tmp_path
):
    """2 CPU processes with FSDP and in-training evaluation: killed after step 5 (resume states saved at step 3, in
    the middle of a refresh window; the evaluation after step 4 already logged), the same command again ends with
    the uninterrupted run's eval.jsonl byte for byte, its metrics.jsonl (timing aside), selection and weights."""
    extra = ["fsdp=true", "checkpoint_every=3"]
    whole = _launch(tmp_path / "whole", 2, *extra, port=29532)
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = tmp_path / "run"
    killed = _launch(run, 2, *extra, fault="5", port=29533)
    assert killed.returncode != 0
    assert {p.name for p in (run / "resume").iterdir()} == {"state_rank0.pt", "state_rank1.pt"}
    assert not (run / "metrics.jsonl").exists() and not (run / "eval.jsonl").exists()
    before = (run / ".metrics.jsonl.partial").read_text().splitlines()
    assert len(before) == 5 and '"step": 4' in (run / ".eval.jsonl.partial").read_text()

    apart = (
        tmp_path / "apart"
    )  # rank 1's state lost (a kill while the states were written): refused, not mixed
    shutil.copytree(run, apart)
    (apart / "resume" / "state_rank1.pt").unlink()
    refused = _launch(apart, 2, *extra, port=29535)
    assert refused.returncode != 0 and "resume states are at different steps (0 to 3)" in refused.stderr

    again = _launch(run, 2, *extra, port=29534)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (run / "resume").exists() and not list(run.glob(".*.partial"))
    after = (run / "metrics.jsonl").read_text().splitlines()
    assert (
        after[:3] == before[:3]
    )  # resumed at step 3: those lines kept as written (timings included), not redone

    assert (run / "eval.jsonl").read_bytes() == (tmp_path / "whole" / "eval.jsonl").read_bytes()
    assert _stream(run / "metrics.jsonl") == _stream(tmp_path / "whole" / "metrics.jsonl")
    assert (run / "selected.json").read_text() == (tmp_path / "whole" / "selected.json").read_text()
    for folder in ("checkpoint", "selected"):
        a = load_file(tmp_path / "whole" / folder / "model.safetensors")
        b = load_file(run / folder / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder
