"""The command lines: typed errors that name the key and what is allowed, --help before any heavy import, console
scripts, the score table of psftlib.eval, progress bars of GRPO / DPO, and a DAG that runs only the profile it
validated. (How fast --help answers is measured by benchmarks/bench_cli_help.py, not timed here.)"""

import os
import subprocess
import sys
import tomllib

import pytest
import yaml

from psftlib.config import ROOT

HEAVY = ("torch", "transformers", "trl", "lm_eval")
COMMANDS = {"psft-train": "psftlib.train", "psft-eval": "psftlib.eval", "psft-posttrain": "psftlib.post"}


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
    }
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("module", sorted(COMMANDS.values()))
def test_help_answers_before_torch_transformers_trl_or_lm_eval_load(module):
    probe = (f"import runpy, sys; sys.argv = [{module!r}, '--help']\n"
             f"try:\n    runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
             f"except SystemExit as e:\n    assert e.code == 0, e.code\n"
             f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")  # fmt: skip
    res = _run(sys.executable, "-c", probe)
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout and res.stdout.strip().endswith("[]"), res.stdout[-500:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "lr=abc"], "error: --set: lr: got 'abc'; allowed: a number > 0, finite"),
        (["--set", "epochs=.inf"], "error: --set: epochs: got inf; allowed: a number > 0, finite"),
        (["--set", "train_batch_size=16.5"], "error: --set: train_batch_size: got 16.5; allowed: an integer >= 1"),
        (["--set", "kl_estimator=k2"], "error: --set: kl_estimator: got 'k2'; allowed: one of ['k3', 'full']"),
        (["--set", "lr"], "error: --set 'lr': expected key=value"),
        (["--set", "mini_batch_size=3"],
         "error: config/smoke.yaml: runs.psft with {'mini_batch_size': 3}: train_batch_size: 16 is not a multiple of "
         "mini_batch_size 3"),
    ],
)  # fmt: skip
def test_a_bad_set_value_is_an_error_naming_the_key_and_what_is_allowed(args, message):
    res = _run(sys.executable, "-m", "psftlib.train", "--profile", "smoke", "--run", "psft", *args)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"python -m psftlib.train: {message}"


def test_an_unknown_set_key_is_blamed_on_set_and_the_known_keys_listed():
    res = _run(
        sys.executable,
        "-m",
        "psftlib.train",
        "--profile",
        "smoke",
        "--run",
        "psft",
        "--set",
        "learning_rate=1",
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "python -m psftlib.train: error: --set: unknown key(s) ['learning_rate']; known: ["
    )
    assert "'lr'" in last and "runs.psft" not in last


def test_unknown_names_are_errors_naming_the_profile_and_the_choices():
    train = _run(sys.executable, "-m", "psftlib.train", "--profile", "smoke", "--run", "nope")
    assert (
        train.returncode == 2
        and "config/smoke.yaml: runs.nope: no such run; defined runs: ['sft'" in train.stderr
    )
    evaluate = _run(sys.executable, "-m", "psftlib.eval", "--profile", "smoke", "--checkpoint", "x",
                    "--task-sets", "nope", "--out-dir", "x")  # fmt: skip
    assert evaluate.returncode == 2
    assert (
        "--task-sets: no task set ['nope'] in profile 'smoke'; have ['curves', 'in_domain'" in evaluate.stderr
    )
    post = _run(
        sys.executable, "-m", "psftlib.post", "--profile", "smoke", "--stage", "dpo", "--cold-start", "nope"
    )
    assert (
        post.returncode == 2
        and "--cold-start: 'nope' is not a run of config/smoke.yaml; runs: [" in post.stderr
    )
    missing = _run(sys.executable, "-m", "psftlib.post", "--profile", "nonexistent", "--stage", "dpo",
                   "--cold-start", "psft")  # fmt: skip
    assert missing.returncode == 2 and "nonexistent.yaml: no such profile; available: [" in missing.stderr
    assert all("Traceback" not in r.stderr for r in (train, evaluate, post, missing))


def test_console_scripts_point_at_the_module_commands():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {name: f"{module}.__main__:main" for name, module in COMMANDS.items()}
    for name, module in COMMANDS.items():
        res = _run(sys.executable, "-c", f"import sys; sys.argv = [{name!r}, '--help']; "
                   f"from {module}.__main__ import main; main()")  # fmt: skip
        assert res.returncode == 0 and f"usage: python -m {module}" in res.stdout, res.stderr


def test_eval_prints_a_score_table():
    from psftlib.eval.__main__ import score_table

    target_3 = {
        "n": 50,
        "k": 4,
        "avg_at_k": 0.225,
        "avg_at_k_stderr": 0.0288,
        "pass_at_k": 0.64,
        "pass_at_k_stderr": 0.0686,
    }
    target_4 = {"n": 50, "k": 4, "avg_at_k": 0.16, "avg_at_k_stderr": 0.0245, "pass_at_k": 0.52}
    results = {"in_domain": {"scores": {"world_target_3": target_3, "world_target_4": target_4}},
               "out_of_domain": {"scores": {"ifeval": {"n": 9, "acc": 1}}}}  # fmt: skip
    lines = score_table(results).splitlines()
    assert [line.split() for line in lines] == [
        ["task", "set", "task", "n", "k", "avg_at_k", "pass_at_k", "acc"],
        ["in_domain", "world_target_3", "50", "4", "0.225", "±", "0.029", "0.640", "±", "0.069", "-"],
        ["in_domain", "world_target_4", "50", "4", "0.160", "±", "0.025", "0.520", "-"],  # no stderr, no such metric
        ["out_of_domain", "ifeval", "9", "-", "-", "1.000"],
    ]  # fmt: skip
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_grpo_and_dpo_draw_a_progress_bar_on_stderr(tmp_path, capsys):
    from types import SimpleNamespace

    from psftlib.post.common import StderrProgress
    from psftlib.post.dpo import DPOSettings
    from psftlib.post.grpo import GRPOSettings

    assert GRPOSettings(train_batch_size=4, mini_batch_size=2, micro_batch_size=2, num_generations=2).trl_config(
        tmp_path / "g").disable_tqdm is False  # fmt: skip
    assert DPOSettings(batch_size=2, micro_batch_size=2).trl_config(tmp_path / "d").disable_tqdm is False
    bar = StderrProgress("grpo")
    state = SimpleNamespace(is_world_process_zero=True, max_steps=4, global_step=0)
    bar.on_train_begin(None, state, None)
    for step in (1, 2, 3, 4):
        state.global_step = step
        bar.on_step_end(None, state, None)
    bar.on_train_end(None, state, None)
    out = capsys.readouterr()
    assert out.out == "" and "grpo: 100%" in out.err and "4/4" in out.err


def test_the_dag_refuses_a_profile_its_jobs_would_not_load(tmp_path):
    # every job loads the profile by its name (config/<name>.yaml): a copy elsewhere would train another config
    data = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    data["runs"]["psft"]["lr"] = 1.0e-3
    for name in ("my.yaml", "smoke.yaml"):
        (tmp_path / name).write_text(yaml.safe_dump(data))
    for how in (
        ["--config", f"profile={tmp_path / 'my.yaml'}"],
        ["--configfile", str(tmp_path / "smoke.yaml")],
    ):
        res = _run(sys.executable, "-m", "snakemake", "-n", *how)
        out = res.stdout + res.stderr
        assert res.returncode != 0, out[-2000:]
        assert (
            "says `profile: smoke`, but every job loads a profile by that name, from config/smoke.yaml" in out
        )
        assert str(tmp_path) in out
