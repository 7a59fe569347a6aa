"""DPO's in-training evaluation under ``accelerate launch`` with 2 CPU processes (gloo) sharding the model (FSDP2, as
the paper profile runs it on 8 GPUs: config/accelerate/fsdp_cpu.yaml): every rank gathers the weights,
rank 0 saves them and evaluates them in a child process (the path the vLLM backend takes; here the HF backend stands
in), the other rank waits; ``eval.jsonl`` is written once and scores as one process scores the same weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from psftlib.config import ROOT

# the run of one process of the job: DPO from the smoke base model on 8 pairs (2 steps of 4), evaluated every 2 steps
DRIVER = r"""
import json
import os
import sys
from psftlib.config import load_profile
from psftlib.data import read_jsonl
from psftlib.eval import make_training_evaluator
from psftlib.post.dpo import DPOSettings, run_dpo
from psftlib.worlds.build import load_tokenizer

prof = load_profile("smoke")
section = {k: v for k, v in prof["dpo"].items() if k not in ("cold_starts", "eval_every")}
section.update(batch_size=4, micro_batch_size=1)
pairs = read_jsonl(prof.post_data("dpo"), required=("prompt", "chosen", "rejected"))[:8]
evaluate = make_training_evaluator(prof, load_tokenizer(prof.layout.base), scratch=sys.argv[2])


def evaluator(model, state_dict=None):  # records which rank evaluated, with gathered weights or not
    with open(f"{sys.argv[2]}.calls", "a") as f:
        f.write(json.dumps({"rank": int(os.environ["RANK"]), "gathered": state_dict is not None}) + "\n")
    return evaluate(model) if state_dict is None else evaluate(model, state_dict=state_dict)


run_dpo(prof.layout.base, pairs, DPOSettings(seed=prof["seed"], **section), sys.argv[1], evaluator, eval_every=2)
"""


@pytest.mark.slow
def test_two_process_dpo_evaluates_once_on_rank_0_as_one_process_would(smoke_world_in_results, tmp_path):
    from psftlib.config import load_profile
    from psftlib.eval import make_training_evaluator
    from psftlib.worlds.build import load_checkpoint

    lay = smoke_world_in_results
    driver, out, scratch = tmp_path / "driver.py", tmp_path / "run", tmp_path / "scratch"
    scratch.mkdir()
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    accelerate = str(Path(sys.executable).parent / "accelerate")
    cmd = [accelerate, "launch", "--config_file", str(ROOT / "config" / "accelerate" / "fsdp_cpu.yaml"),
           "--num_processes", "2", "--main_process_port", "29541", str(driver), str(out), str(scratch)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]

    rows = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2]  # one row per evaluation: one writer
    assert not (out / ".eval.jsonl.partial").exists()
    calls = [json.loads(line) for line in Path(f"{scratch}.calls").read_text().splitlines()]
    assert calls == [{"rank": 0, "gathered": True}] * 2  # rank 1 only helped gather, then waited
    assert not any(scratch.iterdir())  # the saved weights were removed after each evaluation
    # one process, in memory, on the weights the job ended with (step 2) and started from (step 0)
    evaluator = make_training_evaluator(load_profile("smoke"), load_checkpoint(lay.base)[1])
    for row, weights in ((rows[0], lay.base), (rows[1], out / "checkpoint")):
        expected = evaluator(load_checkpoint(weights)[0])
        assert set(expected) == set(row) - {"step", "train_batch"}
        assert expected == pytest.approx({k: row[k] for k in expected}, rel=1e-6, abs=1e-9), row["step"]
    assert any(k.endswith("/avg_at_k") for k in rows[0]) and "heldout_nll" in rows[0]
