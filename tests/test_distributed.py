"""The loop under `accelerate launch` with 2 CPU processes (gloo) equals one process: global token-mean, with the
model replicated (gradients all-reduced by hand) or sharded (FSDP2: parameters, gradients, AdamW states)."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from psftlib.config import ROOT


def _launch(out: Path, processes: int, *extra: str):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    args = ["-m", "psftlib.train", "--profile", "smoke", "--run", "psft", "--out", str(out), "--set", "epochs=2.0",
            "micro_batch_size=1", *extra]  # fmt: skip
    if processes == 1:
        cmd = [sys.executable, *args]
    else:
        accelerate = str(Path(sys.executable).parent / "accelerate")
        cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "fsdp"])
def test_two_processes_give_the_same_losses_and_weights_as_one(smoke_world_in_results, tmp_path, fsdp):
    extra = ["fsdp=true"] if fsdp else []
    one = _launch(tmp_path / "one", 1, *extra)  # one process: fsdp has nothing to shard, the plain loop runs
    assert one.returncode == 0, one.stderr[-3000:]
    two = _launch(tmp_path / "two", 2, *extra)
    assert two.returncode == 0, two.stderr[-3000:]
    import json

    assert json.loads((tmp_path / "two" / "config.json").read_text())["processes"] == 2  # really two ranks
    if fsdp:
        assert "fsdp: no in-training evaluation" in two.stderr
    a = pd.read_json(tmp_path / "one" / "metrics.jsonl", lines=True)
    b = pd.read_json(tmp_path / "two" / "metrics.jsonl", lines=True)
    for col in ("loss", "nll", "entropy", "clip_fraction_high", "ratio_mean", "ratio_max", "grad_norm"):
        pd.testing.assert_series_equal(a[col], b[col], rtol=1e-4, atol=1e-6, check_names=False)
    assert (a["tokens"] == b["tokens"]).all() and (a["trained_tokens"] == b["trained_tokens"]).all()
    wa = load_file(tmp_path / "one" / "checkpoint" / "model.safetensors")
    wb = load_file(tmp_path / "two" / "checkpoint" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
