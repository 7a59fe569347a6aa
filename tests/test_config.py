"""Profiles are validated once, as a whole; a bad value is refused with the file and key named."""

import math
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


def test_overrides_parse_by_the_fields_type_and_are_validated():
    parsed = parse_overrides(["lr=1e-5", "epochs=2", "objective=sft", "max_length=null", "sft_warmup_lr=None",
                              "old_policy_refresh=4", "bf16=true", "clip_high=.inf", "train_batch_size=16.0"])  # fmt: skip
    assert parsed == {"lr": 1e-5, "epochs": 2.0, "objective": "sft", "max_length": None, "sft_warmup_lr": None,
                      "old_policy_refresh": 4, "bf16": True, "clip_high": math.inf, "train_batch_size": 16}  # fmt: skip
    assert [type(parsed[k]) for k in ("epochs", "train_batch_size", "old_policy_refresh")] == [
        float,
        int,
        int,
    ]
    assert parse_overrides(["old_policy_refresh=never"]) == {"old_policy_refresh": "never"}
    prof = load_profile("smoke")
    assert prof.run_config("psft", {"lr": 1e-5}).lr == 1e-5
    with pytest.raises(
        ConfigError
    ) as err:  # a notebook's overrides: the override named, not blamed on the run
        prof.run_config("psft", {"learning_rate": 1e-5})
    assert "with {'learning_rate': 1e-05}: unknown key(s) ['learning_rate']" in str(err.value)
    with pytest.raises(
        ConfigError, match=r"^TrainConfig: objective: got 'ppo'; allowed: one of \['sft', 'psft'"
    ):
        TrainConfig(objective="ppo")


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("lr=abc", "lr: got 'abc'; allowed: a number > 0, finite"),
        ("max_grad_norm=-1.0", "max_grad_norm: got -1.0; allowed: a number > 0, finite"),
        ("warmup_steps=-5", "warmup_steps: got -5; allowed: an integer >= 0"),
        ("warmup_steps=2.5", "warmup_steps: got 2.5; allowed: an integer >= 0"),
        ("checkpoint_every=-3", "checkpoint_every: got -3; allowed: an integer >= 0"),
        ("seed=-1", "seed: got -1; allowed: an integer >= 0"),
        ("clip_high=abc", "clip_high: got 'abc'; allowed: a number >= 0 (.inf allowed)"),
        ("logprob_chunk_size=0", "logprob_chunk_size: got 0; allowed: an integer >= 1 or null"),
        ("epochs=.inf", "epochs: got inf; allowed: a number > 0, finite"),
        ("lr=nan", "lr: got nan; allowed: a number > 0, finite"),
        ("bf16=1", "bf16: got 1; allowed: true or false"),
        ("kl_estimator=k2", "kl_estimator: got 'k2'; allowed: one of ['k3', 'full']"),
        ("old_policy_refresh=0", "old_policy_refresh: got 0; allowed: one of ['train_batch', 'never'] or an integer >= 1"),
        ("entropy_top_fraction=1.5", "entropy_top_fraction: got 1.5; allowed: a number > 0 and <= 1, finite or null"),
    ],
)  # fmt: skip
def test_set_values_get_the_schema_limits_of_profile_values(item, message):
    # --set is checked where it is parsed: the error names --set, the key, the value and what is allowed
    with pytest.raises(ConfigError) as err:
        parse_overrides([item])
    assert str(err.value) == f"--set: {message}"


def test_unknown_or_malformed_set_items_are_named():
    with pytest.raises(
        ConfigError, match=r"^--set: unknown key\(s\) \['learning_rate'\]; known: \['adam_beta1'"
    ):
        parse_overrides(["learning_rate=1e-5"])
    with pytest.raises(ConfigError, match=r"^--set 'lr': expected key=value"):
        parse_overrides(["lr"])


@pytest.mark.parametrize(
    ("key", "value"),
    [("lr", -1), ("lr", "abc"), ("max_grad_norm", -1.0), ("epochs", math.inf), ("train_batch_size", 0),
     ("clip_low", 1.0), ("objective", "ppo"), ("iw_clip_high", 0.5), ("gradient_checkpointing", "yes")],
)  # fmt: skip
def test_a_value_gets_the_same_message_in_a_profile_in_code_and_from_set(tmp_path, key, value):
    # one validation path: the schema's words, whichever way the value came in
    with pytest.raises(ConfigError) as in_code:
        TrainConfig(**{key: value})
    body = str(in_code.value).removeprefix("TrainConfig: ")
    assert body.startswith(f"{key}: got {value!r}; allowed: ")
    with pytest.raises(ConfigError) as in_profile:
        load_profile(_write_bad(tmp_path, lambda d: d["runs"]["psft"].update({key: value})))
    assert str(in_profile.value) == f"{tmp_path / 'bad.yaml'}: runs.psft.{body}"
    with pytest.raises(ConfigError) as overridden:  # a notebook's overrides
        load_profile("smoke").run_config("psft", {key: value})
    assert str(overridden.value).endswith(f": {body}")


def test_relations_between_fields_are_checked_in_code_too():
    with pytest.raises(
        ConfigError, match="^TrainConfig: train_batch_size: 256 is not a multiple of mini_batch_size 5$"
    ):
        TrainConfig(mini_batch_size=5)
    with pytest.raises(
        ConfigError, match="^TrainConfig: entropy_top_fraction: PSFT only; objective is 'sft'$"
    ):
        TrainConfig(objective="sft", entropy_top_fraction=0.2)
    with pytest.raises(
        ConfigError, match=r"^config/smoke.yaml: runs.psft with \{'mini_batch_size': 3\}: train_batch_size"
    ):
        load_profile("smoke").run_config("psft", parse_overrides(["mini_batch_size=3"]))
    cfg = TrainConfig(train_batch_size=16.0, mini_batch_size=16, micro_batch_size=8)
    assert cfg.train_batch_size == 16 and isinstance(cfg.train_batch_size, int)


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
