"""Profiles (``config/<profile>.yaml``), their JSON schema, and the dataclasses the code runs on.

A profile is validated once, as a whole, against ``config/schema.yaml`` before any work starts; an error
names the file and the dotted key (``config/mini.yaml: runs.psft.lr: -1 is less than the minimum of 0``).
A run's :class:`TrainConfig` is the profile's ``train`` defaults updated with ``runs.<name>``, then with
command-line ``--set key=value`` overrides, then checked again.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from psftlib.artifacts import load_artifacts
from psftlib.layout import CONFIG_DIR, ROOT, Layout

SCHEMA_PATH = CONFIG_DIR / "schema.yaml"


class ConfigError(ValueError):
    """A profile or override that does not satisfy the schema; the message names file and key."""


@dataclass
class TrainConfig:
    """One training run. Names follow the paper's batch words (conventions.md)."""

    objective: str = "psft"  # a name of psftlib.objectives.OBJECTIVES (the schema's enum; a test checks)
    train_batch_size: int = 256  # sequences per old-policy refresh (paper: 256)
    mini_batch_size: int = 32  # sequences per optimizer step (paper: 32 -> 8 steps per refresh)
    micro_batch_size: int = 8  # sequences per forward/backward; only memory, never the maths
    epochs: float = 1.0  # passes over the training set (fractional allowed)
    lr: float = 1e-6
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    warmup_steps: int = 0  # linear warm-up of the lr over this many optimizer steps, then constant
    max_grad_norm: float = 1.0
    seed: int = 0
    # PSFT (eq. 6) and its variants
    clip_low: float = 0.2  # ε_low (never acts for A = 1; see objectives.psft_loss)
    clip_high: float = 0.28  # ε_high; .inf = no clipping (§5.2)
    old_policy_refresh: str | int = "train_batch"  # "train_batch" | k (every k mini batches) | "never" (§5.3)
    sft_warmup_train_batches: int = 0  # plain SFT for this many train batches first ("PSFT + warm-up", §4.1)
    sft_warmup_lr: float | None = None  # lr during the SFT warm-up (None: same lr)
    entropy_top_fraction: float | None = (
        None  # train only the top-ρ highest-entropy tokens of a batch (App. C.2)
    )
    # baselines
    kl_coef: float = 0.5  # sft_kl: coefficient of the KL to the initial model (paper: 0.5)
    kl_estimator: str = "k3"  # sft_kl: "k3" (sampled-token, verl's low_var_kl) | "full" (exact, full vocab)
    iw_clip_low: float = 0.2  # iw_sft: importance-weight clip range (paper App. C.4: 0.2 / 1.8)
    iw_clip_high: float = 1.8
    iw_level: str = "token"  # iw_sft: "token" (paper eq. 13) | "sequence" (iw-SFT's own default)
    # data
    max_length: int | None = None  # tokens per sequence (prompt + response + EOS); None: no limit
    truncation: str = "drop"  # longer sequences: "drop" them or "truncate" the response (no EOS then)
    # compute
    logprob_chunk_size: int | None = 1024  # tokens per LM-head chunk; None: full-logits path
    refresh_batch_size: int | None = None  # sequences per no-grad forward of an old-policy refresh (verl's
    # log_prob_micro_batch_size); None: one mini batch per forward. Larger: fewer, fuller forwards (CPU speed)
    gradient_checkpointing: bool = False
    bf16: bool = False  # bf16 autocast (GPU only; ignored on CPU)
    fsdp: bool = (
        False  # with several processes: shard parameters, gradients and AdamW states (FSDP2, per layer)
    )
    lora_r: int = 0  # > 0: train LoRA adapters of this rank (peft); the reference is the adapters disabled
    lora_alpha: int = 16
    # telemetry and outputs
    token_sample_rate: float = 0.0  # share of trained tokens written to tokens.parquet (Figure 10)
    trace_examples: int = (
        0  # every token of demonstrations 0..k-1, each time trained, to traces.parquet (report)
    )
    checkpoint_every: int = 0  # save a resume state every this many optimizer steps (0: never)
    save_checkpoint: bool = True  # final Hugging Face checkpoint

    def validate(self) -> TrainConfig:
        if self.objective not in objective_names():
            raise ConfigError(f"objective: {self.objective!r} is not one of {objective_names()}")
        for name in ("train_batch_size", "mini_batch_size", "micro_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.train_batch_size % self.mini_batch_size:
            raise ConfigError(
                f"train_batch_size: {self.train_batch_size} is not a multiple of "
                f"mini_batch_size {self.mini_batch_size}"
            )
        if self.mini_batch_size % self.micro_batch_size:
            raise ConfigError(
                f"mini_batch_size: {self.mini_batch_size} is not a multiple of "
                f"micro_batch_size {self.micro_batch_size}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr: must be a positive number, got {self.lr}")
        if not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise ConfigError(f"epochs: must be a positive number, got {self.epochs}")
        if not 0 <= self.clip_low < 1:
            raise ConfigError(f"clip_low: must be in [0, 1), got {self.clip_low}")
        if self.clip_high < 0:
            raise ConfigError(f"clip_high: must be >= 0, got {self.clip_high}")
        refresh = self.old_policy_refresh
        if not (refresh in ("train_batch", "never") or (isinstance(refresh, int) and refresh >= 1)):
            raise ConfigError(
                f"old_policy_refresh: {refresh!r} is not 'train_batch', 'never' or a positive integer"
            )
        if self.refresh_batch_size is not None and self.refresh_batch_size < 1:
            raise ConfigError(f"refresh_batch_size: must be >= 1 or null, got {self.refresh_batch_size}")
        if self.entropy_top_fraction is not None and not 0 < self.entropy_top_fraction <= 1:
            raise ConfigError(f"entropy_top_fraction: must be in (0, 1], got {self.entropy_top_fraction}")
        for name, allowed in (
            ("kl_estimator", ("k3", "full")),
            ("iw_level", ("token", "sequence")),
            ("truncation", ("drop", "truncate")),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not one of {list(allowed)}")
        if not 0 < self.iw_clip_low <= 1 <= self.iw_clip_high:
            raise ConfigError(
                f"iw_clip_low/iw_clip_high: need 0 < low <= 1 <= high, got {self.iw_clip_low}, "
                f"{self.iw_clip_high}"
            )
        if self.trace_examples < 0:
            raise ConfigError(f"trace_examples: must be >= 0, got {self.trace_examples}")
        if not 0 <= self.token_sample_rate <= 1:
            raise ConfigError(f"token_sample_rate: must be in [0, 1], got {self.token_sample_rate}")
        if self.objective != "psft" and (self.sft_warmup_train_batches or self.entropy_top_fraction):
            raise ConfigError(
                f"sft_warmup_train_batches / entropy_top_fraction are PSFT options; objective is {self.objective!r}"
            )
        return self

    @property
    def steps_per_train_batch(self) -> int:
        return self.train_batch_size // self.mini_batch_size

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "train config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**values).validate()
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None


@dataclass
class Profile:
    """A validated profile: the raw mapping plus where it came from."""

    name: str
    path: Path
    data: dict[str, Any] = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def runs(self) -> list[str]:
        return list(self.data["runs"])

    @property
    def layout(self) -> Layout:
        """Where this profile's files go (:class:`psftlib.layout.Layout`)."""
        return Layout(self.name)

    # ---- evaluation: task sets and the domains they stand for ----
    @property
    def task_sets(self) -> dict[str, list[str]]:
        return dict((self.data.get("eval") or {}).get("task_sets", {}))

    def domain_tasks(self, domain: str) -> list[str]:
        """The tasks of ``eval.task_sets.<domain>`` (``in_domain`` / ``out_of_domain``); [] when it has none."""
        return list(self.task_sets.get(domain, []))

    @property
    def curves_task_set(self) -> str | None:
        """The in-training subset (``eval.during_training.task_set``), never run as a final evaluation."""
        return ((self.data.get("eval") or {}).get("during_training") or {}).get("task_set")

    @property
    def final_task_sets(self) -> list[str]:
        return [t for t in self.task_sets if t != self.curves_task_set]

    # ---- run selections the pipeline reads ----
    def with_replicates(self, runs: list[str]) -> list[str]:
        """The runs and their seed replicates (``seed_replicates``), each run followed by its copies."""
        return [r for run in runs for r in replicates(self, run)]

    def cold_starts(self, stage: str) -> list[str]:
        """The runs post-training ``stage`` (``grpo`` / ``dpo``) starts from."""
        return list((self.data.get(stage) or {}).get("cold_starts", []))

    @property
    def post_runs(self) -> list[str]:
        """``<cold start>+grpo`` and ``<cold start>+dpo`` of every cold start."""
        return [f"{cold}+{stage}" for stage in ("grpo", "dpo") for cold in self.cold_starts(stage)]

    @property
    def all_runs(self) -> list[str]:
        """Everything that gets a final evaluation: the base model, every run, every post-training run."""
        return ["base", *self.runs, *self.post_runs]

    @property
    def calibration_runs(self) -> list[str]:
        cal = self.data.get("calibration") or {}
        return [*cal.get("sft_grid", []), *cal.get("psft_grid", []), *cal.get("matched", [])]

    @property
    def frontier_runs(self) -> list[str]:
        """Every run of the learning-rate frontier (``frontier.methods``), method by method, without replicates."""
        methods = (self.data.get("frontier") or {}).get("methods", {})
        return [run for runs in methods.values() for run in runs]

    def figure_runs(self, artifact: str) -> list[str]:
        """``figures.<artifact>.runs`` ([] when the profile does not build that artifact)."""
        return list((self.data.get("figures") or {}).get(artifact, {}).get("runs", []))

    def run_source(self, run: str) -> dict[str, Any]:
        """A hub run's ``paper.run_sources.<run>`` with the model id resolved: ``{"model": role, "model_id": id,
        "data": dataset name, ...}``."""
        paper = self.data.get("paper") or {}
        sources = paper.get("run_sources") or {}
        if run not in sources:
            raise ConfigError(
                f"{self.path}: paper.run_sources.{run}: no base model / data given for this run"
            )
        src = dict(sources[run])
        if src["model"] not in paper.get("models", {}):
            raise ConfigError(
                f"{self.path}: paper.run_sources.{run}.model: {src['model']!r} is not under paper.models"
            )
        if src["data"] not in paper.get("datasets", {}):
            raise ConfigError(
                f"{self.path}: paper.run_sources.{run}.data: {src['data']!r} is not under paper.datasets"
            )
        src["model_id"] = paper["models"][src["model"]]
        return src

    @property
    def selected_runs(self) -> list[str]:
        """Table 1's runs evaluated at the checkpoint their in-training in-domain curve selects (§4.1.2), as
        ``<run>@selected``; the small world only (hub runs keep no curves)."""
        if self.data["world"]["kind"] == "hub" or not self.curves_task_set:
            return []
        return [f"{r}@selected" for r in self.with_replicates(self.figure_runs("table1_main"))]

    def run_config(self, run: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
        if run not in self.data["runs"]:
            raise ConfigError(f"{self.path}: runs.{run}: no such run; defined runs: {self.runs}")
        overrides = check_overrides(overrides or {}, source=f"{self.path}: runs.{run}: override")
        values = {**self.data["train"], **(self.data["runs"][run] or {}), **overrides}
        values.setdefault("seed", self.data["seed"])
        return TrainConfig.from_dict(values, source=f"{self.path}: runs.{run}")


def check_overrides(overrides: dict[str, Any], source: str) -> dict[str, Any]:
    """``--set`` / notebook overrides checked against the schema's ``train`` fields, as the profile's own values
    are (same limits and types, the key named); a whole number given for an integer field becomes an int."""
    if not overrides:  # the profile's own values were checked with the profile
        return {}
    fields = dataclasses.fields(TrainConfig)
    known = {f.name for f in fields}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
    ints = {f.name for f in fields if f.type in ("int", int)}
    out = {
        k: int(v) if k in ints and isinstance(v, float) and v.is_integer() else v
        for k, v in overrides.items()
    }
    schema = _schema()
    validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/train", "$defs": schema["$defs"]})
    errors = sorted(validator.iter_errors(out), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("\n".join(
            f"{source} {'.'.join(map(str, e.absolute_path)) or '<keys>'}: {e.message}" for e in errors
        ))  # fmt: skip
    return out


@functools.cache
def _schema() -> dict[str, Any]:
    """``config/schema.yaml`` with ``figures:`` accepting every artifact of ``config/artifacts.yaml`` that takes its
    runs from the profile (``when: figures``)."""
    with open(SCHEMA_PATH) as f:
        schema = yaml.safe_load(f)
    names = [name for name, art in load_artifacts().items() if art.when == "figures"]
    schema["properties"]["figures"]["properties"] = {name: {"$ref": "#/$defs/figure"} for name in names}
    return schema


def objective_names() -> list[str]:
    """The training objectives the schema accepts (``psftlib.objectives.OBJECTIVES``; a test checks they agree)."""
    return list(_schema()["$defs"]["train"]["properties"]["objective"]["enum"])


def validate_profile(data: Any, source: str) -> None:
    """Raise :class:`ConfigError` naming ``source`` and the dotted key of the first schema violation."""
    validator = jsonschema.Draft202012Validator(copy.deepcopy(_schema()))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for err in errors:
            key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"{source}: {key}: {err.message}")
        raise ConfigError("\n".join(lines))
    # cross-field checks the schema cannot express: every run must make a valid TrainConfig
    expand_seed_replicates(data, source)
    profile = Profile(name=data["profile"], path=Path(source), data=data)
    for run in profile.runs:
        profile.run_config(run)
    ev = data.get("eval") or {}
    during = ev.get("during_training")
    if during and during["task_set"] not in ev["task_sets"]:
        raise ConfigError(
            f"{source}: eval.during_training.task_set: {during['task_set']!r} is not under eval.task_sets"
        )
    for stage in ("grpo", "dpo"):
        for run in (data.get(stage) or {}).get("cold_starts", []):
            if run not in data["runs"]:
                raise ConfigError(f"{source}: {stage}.cold_starts: {run!r} is not defined under runs")
    for key, runs in (data.get("calibration") or {}).items():
        for run in runs if isinstance(runs, list) else []:
            if run not in data["runs"]:
                raise ConfigError(f"{source}: calibration.{key}: {run!r} is not defined under runs")
    frontier = data.get("frontier") or {}
    for method, runs in frontier.get("methods", {}).items():
        for run in runs:
            if run not in data["runs"]:
                raise ConfigError(f"{source}: frontier.methods.{method}: {run!r} is not defined under runs")
    if frontier and frontier["reference"] not in frontier["methods"]:
        raise ConfigError(
            f"{source}: frontier.reference: {frontier['reference']!r} is not one of frontier.methods"
        )
    for fig, spec in data.get("figures", {}).items():
        for run in spec.get("runs", []):
            if run not in data["runs"]:
                raise ConfigError(f"{source}: figures.{fig}.runs: {run!r} is not defined under runs")


def replicate_name(run: str, seed: int) -> str:
    """The run name of ``run`` repeated with ``seed`` (``sft`` -> ``sft_seed1``)."""
    return f"{run}_seed{seed}"


def expand_seed_replicates(data: dict[str, Any], source: str) -> None:
    """Add ``runs.<run>_seed<k>`` (a copy of ``runs.<run>`` with ``seed: k``) for every ``seed_replicates`` pair."""
    rep = data.get("seed_replicates")
    if not rep:
        return
    for run in rep["runs"]:
        if run not in data["runs"]:
            raise ConfigError(f"{source}: seed_replicates.runs: {run!r} is not defined under runs")
        for seed in rep["seeds"]:
            if seed == data["seed"]:
                raise ConfigError(f"{source}: seed_replicates.seeds: {seed} is the profile's own seed")
            name = replicate_name(run, seed)
            if name in data["runs"] and data["runs"][name].get("seed") != seed:
                raise ConfigError(f"{source}: runs.{name}: clashes with a seed replicate of {run!r}")
            data["runs"][name] = {**(data["runs"][run] or {}), "seed": seed}


def replicates(profile: Profile, run: str) -> list[str]:
    """``run`` and its seed replicates that the profile defines (just ``[run]`` when there are none)."""
    rep = profile.data.get("seed_replicates") or {}
    if run not in rep.get("runs", []):
        return [run]
    return [run, *(replicate_name(run, s) for s in rep["seeds"])]


def load_profile(name_or_path: str | Path | Profile) -> Profile:
    """Load ``config/<name>.yaml`` (or a path to a YAML file) and validate it; a :class:`Profile` is returned as is.

    A file is validated once per process (and again when it changes): the notebooks and helpers that take a
    profile by name all load it, and each gets its own copy."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        available = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem not in ("schema", "artifacts"))
        raise ConfigError(f"{path}: no such profile; available: {available}")
    return copy.deepcopy(_load_validated(path.resolve(), path.stat().st_mtime_ns, path))


@functools.lru_cache(maxsize=16)
def _load_validated(resolved: Path, mtime_ns: int, path: Path) -> Profile:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        shown = path.relative_to(ROOT)
    except ValueError:
        shown = path
    validate_profile(data, str(shown))
    return Profile(name=data["profile"], path=shown, data=copy.deepcopy(data))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-5", "epochs=2"]`` -> ``{"lr": 1e-05, "epochs": 2}`` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # PyYAML reads "1e-5" (no dot) as a string
            with contextlib.suppress(ValueError):
                parsed = float(parsed)
        out[key.strip()] = parsed
    return out
