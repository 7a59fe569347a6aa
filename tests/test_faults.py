"""Faults a careless or hostile user causes (issue 22), each tried and its outcome checked: a kill at any point of
a run followed by the same command ends identical to an uninterrupted run; two writers of one folder, bad
``--set`` values and bad files of every kind stop with a clear error naming the folder, key or file (and line),
and leave what was there as it was.

:data:`CASES` lists every case tried; :func:`summary_line` gives the README's count ("N cases tried, 0 data
lost"), printed at the end of this module's run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from psftlib.config import ROOT, ConfigError, TrainConfig, load_profile, parse_overrides
from psftlib.data import DataError, EncodeReport, check_unknown_rate, encode_all, read_jsonl
from psftlib.runtime import FolderLockedError, acquire_folder_lock, release_folder_lock
from psftlib.train import FAULT_ENV, TIMING_KEYS, Plan
from psftlib.train.resume import RunFiles, data_summary
from psftlib.train.run import length_warnings
from psftlib.worlds.build import load_checkpoint, load_tokenizer
from psftlib.worlds.rows import LoaderError, read_table


@dataclass(frozen=True)
class Case:
    """One fault: what was done, what must follow, and the function that does it and returns files lost."""

    id: str
    fault: str
    expect: str
    run: Callable[[Ctx], int]


CASES: list[Case] = []  # every case this module tries, in order
LOST: dict[str, int] = {}  # case id -> files lost or changed (0 for every case that passed)


def case(id: str, fault: str, expect: str):
    def add(fn: Callable[[Ctx], int]) -> Callable[[Ctx], int]:
        CASES.append(Case(id, fault, expect, fn))
        return fn

    return add


def summary_line() -> str:
    """The README's reliability line, from the cases that ran."""
    return f"{len(LOST)} of {len(CASES)} fault cases tried, {sum(LOST.values())} data lost"


@dataclass
class Ctx:
    tmp: Path
    request: pytest.FixtureRequest

    @property
    def world(self) -> Path:  # the smoke world: data/ and world/base
        return self.request.getfixturevalue("smoke_world")

    def kills(self) -> dict[str, subprocess.CompletedProcess]:
        return self.request.getfixturevalue("kill_runs")


def raises(exc: type[BaseException], fn: Callable[[], object], *needles: str) -> str:
    """Run ``fn``; it must raise ``exc`` whose message holds every needle. Returns the message."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def changed(before: dict[str, str], folder: Path) -> int:
    after = snapshot(folder)
    return sum(after.get(k) != v for k, v in before.items())


# ---- kills: the same command again ends as if never killed --------------------------------------------------------

KILLS = {"mid_run": "3", "finish_outputs": "finish:outputs", "finish_streams": "finish:streams"}


def _train(out: Path, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    cmd = [sys.executable, "-m", "psftlib.train", "--profile", "smoke", "--run", "psft", "--out", str(out),
           "--set", "epochs=0.5", "checkpoint_every=2"]  # fmt: skip  # 4 steps, resume state at step 2
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(procs: dict[str, subprocess.Popen]) -> dict[str, subprocess.CompletedProcess]:
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        out[name] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    return out


@pytest.fixture(scope="module")
def kill_runs(smoke_world_in_results, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """An uninterrupted run and one killed at each point, side by side; then each killed one run again."""
    root = tmp_path_factory.mktemp("kills")
    first = _wait({"whole": _train(root / "whole"), **{k: _train(root / k, f) for k, f in KILLS.items()}})
    again = {}
    for name in KILLS:
        assert first[name].returncode == -signal.SIGKILL, first[name].stderr[-2000:]
        assert (root / name / ".lock").exists()  # the killed process's lock: stale, taken over below
        again[f"{name}:again"] = _train(root / name)
    return {**first, **_wait(again), "root": root}  # type: ignore[dict-item]


def _same_run(whole: Path, other: Path) -> int:
    """Files of ``other`` that differ from ``whole`` (timing columns aside)."""
    differ = 0
    metrics = [
        pd.read_json(p / "metrics.jsonl", lines=True).drop(columns=list(TIMING_KEYS)) for p in (whole, other)
    ]
    differ += not metrics[0].equals(metrics[1])
    for name in ("eval.jsonl", "selected.json", "config.json"):
        differ += (whole / name).read_bytes() != (other / name).read_bytes()
    for name in ("tokens.parquet", "traces.parquet"):
        differ += not pd.read_parquet(whole / name).equals(pd.read_parquet(other / name))
    a, b = (load_file(p / "checkpoint" / "model.safetensors") for p in (whole, other))
    differ += a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a)
    return differ


for _name, _point in KILLS.items():

    @case(f"kill:{_name}", f"SIGKILL at {_point} (PSFT_FAULT_AFTER_STEP), then the same command",
          "identical to an uninterrupted run, eval.jsonl's step 0 included; the stale lock taken over")  # fmt: skip
    def _kill(ctx: Ctx, name: str = _name) -> int:
        runs = ctx.kills()
        root, again = runs["root"], runs[f"{name}:again"]
        assert runs["whole"].returncode == 0 and again.returncode == 0, again.stderr[-2000:]
        assert "data: 32 demonstrations read, 32 kept" in again.stderr  # the data summary at the start
        assert not (root / name / "resume").exists() and not (root / name / ".lock").exists()
        assert json.loads((root / name / "eval.jsonl").read_text().splitlines()[0])["step"] == 0
        return _same_run(root / "whole", root / name)


# ---- two writers of one folder ---------------------------------------------------------------------------------


def _holder() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


@case("lock:run_folder", "a second writer of a run folder held by a live process; then the holder dies",
      "FolderLockedError naming the folder and the holder's PID; the stale lock taken over")  # fmt: skip
def _lock_run(ctx: Ctx) -> int:
    out = ctx.tmp / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    holder = _holder()
    try:
        (out / ".lock").write_text(str(holder.pid))
        before = snapshot(out)
        raises(
            FolderLockedError,
            lambda: acquire_folder_lock(out, "run folder"),
            str(out),
            f"process {holder.pid}",
        )
    finally:
        holder.kill()
        holder.wait()
    lost = changed(before, out)
    acquire_folder_lock(out, "run folder")  # the holder is gone
    assert (out / ".lock").read_text() == str(os.getpid())
    release_folder_lock(out)
    return lost + (out / ".lock").exists()


@case("lock:eval_folder", "python -m psftlib.eval of a task set another live process writes; another set meanwhile",
      "FolderLockedError naming the folder, set and PID, nothing written; the other set runs; after the holder dies "
      "the evaluation runs")  # fmt: skip
def _lock_eval(ctx: Ctx) -> int:
    from psftlib.eval.__main__ import main

    final, out, ckpt = ctx.tmp / "final", ctx.tmp / "out", ctx.tmp / "run" / "selected"
    ckpt.mkdir(parents=True)
    (ckpt.parent / "selected.json").write_text('{"step": 4, "final_step": 4}')
    final.mkdir()
    for name in ("in_domain", "out_of_domain"):
        (final / f"{name}.json").write_text('{"scores": {}}')
        (final / f"{name}.samples.jsonl").write_text("{}\n")

    def argv(name: str) -> list[str]:
        return ["--profile", "smoke", "--checkpoint", str(ckpt), "--task-sets", name, "--out-dir", str(out),
                "--reuse-final", str(final)]  # fmt: skip

    holder = _holder()
    try:
        out.mkdir()
        (out / ".lock.in_domain").write_text(str(holder.pid))
        raises(FolderLockedError, lambda: main(argv("in_domain")), str(out), f"process {holder.pid}",
               "evaluation folder's 'in_domain'")  # fmt: skip
        assert sorted(p.name for p in out.iterdir()) == [".lock.in_domain"]
        main(argv("out_of_domain"))  # another task set of the same run (rules eval and eval_only at once)
        assert json.loads((out / "out_of_domain.json").read_text())["reused_from"] == str(final)
    finally:
        holder.kill()
        holder.wait()
    main(argv("in_domain"))
    assert json.loads((out / "in_domain.json").read_text())["reused_from"] == str(final)
    return len(list(out.glob(".lock*")))


# ---- bad --set values (profile schema) ----------------------------------------------------------------------------

BAD_SETS = ["max_grad_norm=-1.0", "warmup_steps=-5", "checkpoint_every=-3", "seed=-1", "clip_high=abc",
            "train_batch_size=16.5", "epochs=.inf", "logprob_chunk_size=0", "objective=xyz", "no_such_key=1"]  # fmt: skip
for _item in BAD_SETS:

    @case(f"set:{_item}", f"--set {_item}", "ConfigError naming the key, before any work")
    def _bad_set(ctx: Ctx, item: str = _item) -> int:
        key = item.split("=")[0]
        raises(ConfigError, lambda: load_profile("smoke").run_config("psft", parse_overrides([item])), key)
        return 0


@case("profile:task_set_name", "a task-set name with shell characters in a profile", "ConfigError naming it")
def _shell_name(ctx: Ctx) -> int:
    data = json.loads(json.dumps(load_profile("smoke").data))
    data["eval"]["task_sets"]["x||touch marker||"] = ["world_target_3"]
    (ctx.tmp / "smoke.yaml").write_text(json.dumps(data))  # JSON is YAML
    raises(ConfigError, lambda: load_profile(ctx.tmp / "smoke.yaml"), "x||touch marker||")
    return (ctx.tmp / "marker").exists() + (ROOT / "marker").exists()


# ---- bad files of every kind: the error names the file (and line) -------------------------------------------------

GOOD = '{"prompt": "compute 1 + 2", "response": "answer : 3"}\n'
JSONL = {
    "non_utf8": (GOOD.encode() + b'{"prompt": "a\xff", "response": "b"}\n', ":2: not UTF-8"),
    "bad_json": ((GOOD + "\n{not json}\n").encode(), ":3: not valid JSON"),
    "response_123": (b'{"prompt": "a", "response": 123}\n', ":1: field 'response' is int"),
    "not_object": (GOOD.encode() + b"[1, 2]\n", ":2: expected a JSON object"),
    "empty": (b"\n", ": no records"),
}
for _kind, (_bytes, _needle) in JSONL.items():

    @case(f"file:jsonl_{_kind}", f"train.jsonl: {_kind}", f"DataError naming the file and {_needle!r}")
    def _jsonl(ctx: Ctx, data: bytes = _bytes, needle: str = _needle) -> int:
        (ctx.tmp / "train.jsonl").write_bytes(data)
        raises(DataError, lambda: read_jsonl(ctx.tmp / "train.jsonl"), f"train.jsonl{needle}")
        return 0


def _cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _broken_checkpoint(ctx: Ctx, name: str) -> Path:
    ckpt = ctx.tmp / "ckpt"
    shutil.copytree(ctx.world / "world" / "base", ckpt)
    _cut(ckpt / name)
    return ckpt


for _file, _needle in {"model.safetensors": "model.safetensors", "tokenizer.json": "tokenizer.json:",
                       "config.json": "config.json:"}.items():  # fmt: skip

    @case(f"file:checkpoint_{_file}", f"a truncated {_file} in a checkpoint", f"DataError naming {_needle!r}")
    def _checkpoint(ctx: Ctx, file: str = _file, needle: str = _needle) -> int:
        ckpt = _broken_checkpoint(ctx, file)
        raises(DataError, lambda: load_checkpoint(ckpt), str(ckpt), needle)
        return 0


@case("file:eval_run_folder", "python -m psftlib.eval --checkpoint <run folder> (not its checkpoint/)",
      "an error naming the folder given and the checkpoint expected")  # fmt: skip
def _run_folder(ctx: Ctx) -> int:
    from psftlib.eval.__main__ import main

    run = ctx.tmp / "run"
    shutil.copytree(ctx.world / "world" / "base", run / "checkpoint")
    (run / "config.json").write_text(json.dumps({"objective": "psft"}))
    argv = [
        "--profile",
        "smoke",
        "--checkpoint",
        str(run),
        "--task-sets",
        "in_domain",
        "--out-dir",
        str(ctx.tmp / "e"),
    ]
    raises(
        FileNotFoundError,
        lambda: main(argv),
        f"{run}: not a Hugging Face checkpoint",
        str(run / "checkpoint"),
    )
    return 0


def _eval_json(ctx: Ctx, scores: dict) -> Path:
    from psftlib.layout import Layout

    path = Layout("smoke", ctx.tmp).eval("psft", "in_domain")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"tasks": list(scores), "scores": scores}, indent=2))
    return path


@case(
    "file:eval_json_truncated",
    "a truncated final-evaluation JSON read for the tables",
    "DataError, file:line",
)
def _eval_truncated(ctx: Ctx) -> int:
    from psftlib.report.analysis import final_scores

    path = _eval_json(ctx, {t: {"avg_at_k": 0.5} for t in ("world_target_3", "world_target_4")})
    _cut(path)
    raises(DataError, lambda: final_scores("smoke", "psft", ["in_domain"], ctx.tmp), f"{path}:")
    return 0


@case("file:eval_json_missing_task", "a final-evaluation JSON without one task of its task set",
      "DataError naming the file and the task (no domain mean over the rest)")  # fmt: skip
def _eval_missing(ctx: Ctx) -> int:
    from psftlib.report.analysis import final_scores

    path = _eval_json(ctx, {"world_target_3": {"avg_at_k": 0.5}})
    raises(
        DataError, lambda: final_scores("smoke", "psft", ["in_domain"], ctx.tmp), str(path), "world_target_4"
    )
    return 0


@case("file:initial_curves_truncated", "a truncated initial_curves.json", "DataError, file:line")
def _curves_truncated(ctx: Ctx) -> int:
    from psftlib.eval import read_initial_curves

    path = ctx.tmp / "initial_curves.json"
    path.write_text(json.dumps({"checkpoint": "x", "fingerprint": {}, "scores": {"a": 1.0}}, indent=2))
    _cut(path)
    raises(
        DataError,
        lambda: read_initial_curves(path, load_profile("smoke"), ctx.world / "world" / "base"),
        f"{path}:",
    )
    return 0


@case("file:selected_json_truncated", "a truncated selected.json for --reuse-final", "DataError, file:line")
def _selected_truncated(ctx: Ctx) -> int:
    from psftlib.eval import reuse_final_eval

    (ctx.tmp / "selected").mkdir()
    (ctx.tmp / "selected.json").write_text('{"step": 4,\n "final_step"')
    raises(
        DataError,
        lambda: reuse_final_eval(ctx.tmp / "selected", ctx.tmp, ["x"], ctx.tmp / "o"),
        "selected.json:2",
    )
    return 0


@case("file:task_data", "an eval task's JSONL with a broken line", "DataError naming the task file and line")
def _task_data(ctx: Ctx) -> int:
    from psftlib.eval import task_spec

    shutil.copy(ctx.world / "data" / "eval_target_3.jsonl", ctx.tmp / "eval_target_3.jsonl")
    with open(ctx.tmp / "eval_target_3.jsonl", "ab") as f:
        f.write(b'{"prompt": "\xfe"}\n')
    raises(DataError, lambda: task_spec("world_target_3", ctx.tmp), "eval_target_3.jsonl:", "not UTF-8")
    return 0


for _suffix, _data in {".parquet": b"PAR1 not parquet", ".json": b'[{"problem": "a"},\n {"pro'}.items():

    @case(
        f"file:table{_suffix}", f"a corrupt {_suffix} dataset file (paper loaders)", "LoaderError naming it"
    )
    def _table(ctx: Ctx, suffix: str = _suffix, data: bytes = _data) -> int:
        (ctx.tmp / f"d{suffix}").write_bytes(data)
        raises(LoaderError, lambda: read_table(ctx.tmp / f"d{suffix}"), f"d{suffix}")
        return 0


# ---- the resume state and the streams of a killed run ---------------------------------------------------------------


def _files(ctx: Ctx) -> RunFiles:
    return RunFiles(ctx.tmp / "run", 0, with_curves=True)


@case("resume:truncated_state", "a truncated resume/state_rank0.pt", "DataError naming the file")
def _state_truncated(ctx: Ctx) -> int:
    files = _files(ctx)
    files.resume_dir.mkdir(parents=True)
    torch.save({"model": {"w": torch.zeros(100)}}, files.resume_dir / "state_rank0.pt")
    _cut(files.resume_dir / "state_rank0.pt")
    raises(
        DataError, lambda: files.load_state(None, None, TrainConfig(), 32), "state_rank0.pt: cannot be read"
    )
    return 0


class _Planted:
    def __reduce__(self):
        return (os.system, (f"touch {Path(__file__).parent / 'planted_marker'}",))


@case(
    "resume:planted_pickle", "a pickle that runs a command, planted as the resume state", "refused, never run"
)
def _planted(ctx: Ctx) -> int:
    files = _files(ctx)
    files.resume_dir.mkdir(parents=True)
    torch.save({"x": _Planted()}, files.resume_dir / "state_rank0.pt")
    raises(DataError, lambda: files.load_state(None, None, TrainConfig(), 32), "state_rank0.pt")
    return (Path(__file__).parent / "planted_marker").exists()


def _start(ctx: Ctx, metrics: list[str], evals: list[str], step: int) -> tuple[RunFiles, list[dict]]:
    files = _files(ctx)
    files.out_dir.mkdir(parents=True)
    files.metrics_partial.write_text("".join(m + "\n" for m in metrics))
    files.eval_partial.write_text("".join(e + "\n" for e in evals))
    cfg = TrainConfig(train_batch_size=16, mini_batch_size=4, micro_batch_size=2, refresh_batch_size=16)
    try:
        return files, files.start(cfg, Plan(cfg, 32), None, step)
    finally:
        files.close()


@case("resume:metrics_lost_lines", "a metrics stream shorter than the resume state's step",
      "DataError naming the stream and the step; the stream left as it was")  # fmt: skip
def _short_metrics(ctx: Ctx) -> int:
    rows = [json.dumps({"step": s}) for s in (1, 2)]
    raises(DataError, lambda: _start(ctx, rows, [], step=3), ".metrics.jsonl.partial: 2 lines", "step 3")
    return (ctx.tmp / "run" / ".metrics.jsonl.partial").read_text() != "".join(r + "\n" for r in rows)


@case("resume:torn_eval_line", "a kill while an eval.jsonl line was written (a torn last line)",
      "resumed: the rows up to the resume step kept, the torn one redone")  # fmt: skip
def _torn_eval(ctx: Ctx) -> int:
    metrics = [json.dumps({"step": s}) for s in (1, 2, 3)]
    evals = [json.dumps({"step": 0}), json.dumps({"step": 2}), '{"step": 4, "sco']
    files, rows = _start(ctx, metrics, evals, step=2)
    kept = files.eval_partial.read_text().splitlines()
    return (kept != evals[:2]) + ([r["step"] for r in rows] != [1, 2])


# ---- data hygiene: reported, not hidden ---------------------------------------------------------------------------


@case("data:over_length", "demonstrations longer than the model's context length (max_length unset)",
      "a warning naming the file and the counts; the policy applied")  # fmt: skip
def _over_length(ctx: Ctx) -> int:
    tok = load_tokenizer(ctx.world / "world" / "base")
    rows = [
        {"prompt": "compute 1 + 2", "response": "answer : 3"},
        {"prompt": "compute 1 + 2", "response": "7 " * 40},
    ]
    examples, report = encode_all(tok, rows, 30, "drop")  # 30: the context length standing in for max_length
    lines = length_warnings(Path("train.jsonl"), report, None, 30, "drop")
    assert (
        len(examples) == 1
        and "train.jsonl: 1 of 2 demonstrations are longer than the model's context" in lines[0]
    )
    assert (
        "longer than the model's context length 30" in length_warnings(Path("t"), report, 64, 30, "drop")[0]
    )
    return 0


@case(
    "data:unknown_tokens",
    "demonstrations with words outside the vocabulary",
    "DataError naming the file and rate",
)
def _unknown(ctx: Ctx) -> int:
    tok = load_tokenizer(ctx.world / "world" / "base")
    examples, _ = encode_all(tok, [{"prompt": "compute 1 + 2", "response": "zebra quokka 3"}])
    raises(DataError, lambda: check_unknown_rate(tok, [e.input_ids for e in examples], "x/train.jsonl"),
           "x/train.jsonl: 2 of", "unknown token")  # fmt: skip
    return 0


@case(
    "data:batch_arithmetic",
    "37 demonstrations in train batches of 16",
    "the 5 left out of each epoch printed",
)
def _batch_drop(ctx: Ctx) -> int:
    cfg = TrainConfig(train_batch_size=16, mini_batch_size=4, micro_batch_size=2, refresh_batch_size=16)
    line = data_summary(Plan(cfg, 37), EncodeReport(40, 37, 3, 0, 0))
    assert "40 demonstrations read, 37 kept; 3 dropped by the length limit" in line
    assert "5 of 37 left out of every epoch" in line
    return 0


# ---- the run --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if LOST and capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\ntest_faults: {summary_line()}")


@pytest.mark.parametrize("fault", CASES, ids=[c.id for c in CASES])
def test_fault(fault: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    lost = fault.run(Ctx(tmp_path, request))
    LOST[fault.id] = int(lost)
    assert lost == 0, f"{fault.id}: {lost} file(s) lost or changed"
