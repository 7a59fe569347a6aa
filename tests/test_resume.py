"""A run killed (SIGKILL) at any step and restarted with the same command ends exactly as an uninterrupted run."""

import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from psftlib.config import ROOT
from psftlib.train import FAULT_ENV, TIMING_KEYS


def _train(out, fault=None, extra=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = str(fault)
    cmd = [sys.executable, "-m", "psftlib.train", "--profile", "smoke", "--run", "psft", "--out", str(out), "--set",
           "epochs=3.0", "checkpoint_every=3", "token_sample_rate=0.3", *extra]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


def _metrics(path):
    df = pd.read_json(path / "metrics.jsonl", lines=True)
    return df.drop(columns=list(TIMING_KEYS))


@pytest.mark.slow
@pytest.mark.parametrize("fault_step", [7])  # mid train batch: pending old-policy log-probs must survive
def test_kill_and_resume_equals_uninterrupted(smoke_world_in_results, tmp_path, fault_step):
    whole = _train(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = _train(tmp_path / "resumed", fault=fault_step)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "resumed" / "metrics.jsonl").exists()  # nothing half-written looks finished
    assert (tmp_path / "resumed" / "resume" / "state_rank0.pt").exists()
    resumed = _train(tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (tmp_path / "resumed" / "resume").exists()

    _assert_same_run(tmp_path / "whole", tmp_path / "resumed")


def _assert_same_run(whole, resumed):
    pd.testing.assert_frame_equal(_metrics(whole), _metrics(resumed))
    assert (whole / "eval.jsonl").read_text() == (resumed / "eval.jsonl").read_text()  # step 0 included
    pd.testing.assert_frame_equal(
        pd.read_parquet(whole / "tokens.parquet"), pd.read_parquet(resumed / "tokens.parquet")
    )
    a = load_file(whole / "checkpoint" / "model.safetensors")
    b = load_file(resumed / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["finish:outputs", "finish:streams"])
def test_kill_while_finishing_and_run_again_equals_uninterrupted(smoke_world_in_results, tmp_path, point):
    """The end of a run (outputs written, streams published, resume state removed) is as recoverable as its
    middle: a kill between two of those steps, then the same command, ends as if never killed."""
    whole = _train(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = _train(tmp_path / "killed", fault=point)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "killed" / "resume" / "state_rank0.pt").exists()
    again = _train(tmp_path / "killed")
    assert again.returncode == 0, again.stderr[-2000:]
    assert not (tmp_path / "killed" / "resume").exists()
    assert not list((tmp_path / "killed").glob(".*.partial"))
    _assert_same_run(tmp_path / "whole", tmp_path / "killed")


@pytest.mark.slow
def test_resume_refuses_a_changed_config(smoke_world_in_results, tmp_path):
    assert _train(tmp_path / "r", fault=4).returncode == -signal.SIGKILL
    changed = _train(tmp_path / "r", extra=["lr=0.5"])
    assert changed.returncode != 0 and "different config" in changed.stderr


class _Planted:
    def __reduce__(self):
        return (os.system, ("touch planted_marker",))


def test_a_planted_resume_file_is_refused_and_never_run(smoke_world_in_results, tmp_path):
    state = tmp_path / "r" / "resume" / "state_rank0.pt"
    state.parent.mkdir(parents=True)
    torch.save({"x": _Planted()}, state)
    res = _train(tmp_path / "r", extra=["epochs=1.0"])
    assert res.returncode != 0 and "not a resume state this code wrote" in res.stderr
    assert not (ROOT / "planted_marker").exists() and not (tmp_path / "planted_marker").exists()


def test_a_second_writer_of_a_run_folder_is_refused_and_a_stale_lock_taken_over(
    smoke_world_in_results, tmp_path
):
    out = tmp_path / "r"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(str(holder.pid))  # a live run holds the folder
        second = _train(out, extra=["epochs=1.0"])
        assert second.returncode != 0 and f"process {holder.pid} is writing this run folder" in second.stderr
        assert not (out / "metrics.jsonl").exists() and not (out / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    again = _train(out, extra=["epochs=1.0"])  # the holder is gone: its lock is stale
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "metrics.jsonl").exists() and not (out / ".lock").exists()
