"""Profiles are validated once, as a whole; a bad value is refused with the file and key named."""

import subprocess
import sys

import pytest
import yaml

from psftlib.config import ROOT, ConfigError, TrainConfig, load_profile, parse_overrides


@pytest.mark.parametrize("name", ["smoke", "mini"])
def test_shipped_profiles_are_valid_and_every_run_resolves(name):
    prof = load_profile(name)
    for run in prof.runs:
        cfg = prof.run_config(run)
        assert cfg.train_batch_size % cfg.mini_batch_size == 0


def _write_bad(tmp_path, mutate):
    data = yaml.safe_load(open(load_profile("smoke").path))
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda d: d["runs"]["psft"].update(lr=-1.0), "runs.psft.lr"),
        (lambda d: d["runs"]["psft"].update(clip_hihg=0.3), "runs.psft"),  # typo'd key
        (lambda d: d["train"].update(mini_batch_size="four"), "train.mini_batch_size"),
        (lambda d: d["model"].pop("hidden_size"), "model"),
        (lambda d: d["world"].update(kind="imaginary"), "world.kind"),
        (lambda d: d["runs"]["psft"].update(mini_batch_size=5), "runs.psft"),  # 16 % 5 != 0
        (lambda d: d["figures"]["fig1_entropy"].update(runs=["nope"]), "figures.fig1_entropy.runs"),
        (lambda d: d.update(seed_replicates={"seeds": [1], "runs": ["nope"]}), "seed_replicates.runs"),
        (lambda d: d.update(seed_replicates={"seeds": [0], "runs": ["sft"]}), "seed_replicates.seeds"),
        (lambda d: d.update(seed_replicates={"seeds": [1]}), "seed_replicates"),
    ],
)
def test_malformed_profile_is_refused_naming_the_key(tmp_path, mutate, key):
    path = _write_bad(tmp_path, mutate)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert key in str(err.value) and "bad.yaml" in str(err.value)


def test_unknown_profile_lists_available():
    with pytest.raises(ConfigError, match="available.*mini"):
        load_profile("nonexistent")


def test_overrides_parse_and_are_validated():
    assert parse_overrides(["lr=1e-5", "epochs=2", "objective=sft"]) == {
        "lr": 1e-5,
        "epochs": 2,
        "objective": "sft",
    }
    prof = load_profile("smoke")
    assert prof.run_config("psft", {"lr": 1e-5}).lr == 1e-5
    with pytest.raises(ConfigError, match="runs.psft.*unknown key"):
        prof.run_config("psft", {"learning_rate": 1e-5})
    with pytest.raises(ConfigError, match="objective"):
        TrainConfig(objective="ppo").validate()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("lr=abc", "lr: 'abc' is not of type 'number'"),
        ("max_grad_norm=-1.0", "max_grad_norm: -1.0 is less than or equal to the minimum of 0"),
        ("warmup_steps=-5", "warmup_steps: -5 is less than the minimum of 0"),
        ("checkpoint_every=-3", "checkpoint_every: -3 is less than the minimum of 0"),
        ("seed=-1", "seed: -1 is less than the minimum of 0"),
        ("clip_high=abc", "clip_high: 'abc' is not of type 'number'"),
        ("logprob_chunk_size=0", "logprob_chunk_size: 0 is less than the minimum of 1"),
        ("epochs=.inf", "epochs: must be a positive number, got inf"),
    ],
)
def test_overrides_get_the_schema_limits_of_profile_values(item, message):
    with pytest.raises(ConfigError) as err:
        load_profile("smoke").run_config("psft", parse_overrides([item]))
    assert "config/smoke.yaml: runs.psft" in str(err.value) and message in str(err.value)


def test_task_set_names_that_would_reach_a_shell_are_refused(tmp_path):
    data = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    data["eval"]["task_sets"]["x||touch marker||"] = ["world_target_3"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="eval.task_sets"):
        load_profile(path)


def test_a_whole_number_for_an_integer_field_is_an_int():
    cfg = load_profile("smoke").run_config("psft", parse_overrides(["train_batch_size=16.0"]))
    assert cfg.train_batch_size == 16 and isinstance(cfg.train_batch_size, int)


def test_seed_replicates_copy_the_run_with_another_seed_only(tmp_path):
    from psftlib.config import replicates

    path = _write_bad(tmp_path, lambda d: d.update(seed_replicates={"seeds": [3, 5], "runs": ["psft"]}))
    prof = load_profile(path)
    assert replicates(prof, "psft") == ["psft", "psft_seed3", "psft_seed5"] and replicates(prof, "sft") == [
        "sft"
    ]
    base, copy = prof.run_config("psft"), prof.run_config("psft_seed5")
    assert copy.seed == 5 and base.seed == prof["seed"]
    assert {**vars(copy), "seed": base.seed} == vars(base)


def test_config_and_notebook_runner_do_not_import_torch():
    # every notebook job's papermill process imports the runner, and the figure and table notebooks load a profile
    # and read results with these modules; torch would cost each of them ~1.5-2 s (psftlib/__init__.py, config.py)
    figures = ("import sys, psftlib.config, psftlib.notebook, psftlib.report.analysis, psftlib.report.plots, psftlib.report.findings, "
               "psftlib.data, psftlib.layout, psftlib.artifacts, psftlib.sources; psftlib.config.load_profile('smoke')")  # fmt: skip
    without_loss = f"{figures}; print('torch' in sys.modules)"
    with_loss = f"{figures}; from psftlib import psft_loss; print('torch' in sys.modules)"
    out = [subprocess.run([sys.executable, "-c", c], capture_output=True, text=True, check=True).stdout.strip()
           for c in (without_loss, with_loss)]  # fmt: skip
    assert out == ["False", "True"]  # and the losses still load on first use
