"""Profiles (``config/<profile>.yaml``), their JSON schema, and the dataclasses the code runs on.

A profile is validated once, as a whole, against ``config/schema.yaml`` before any work starts; an error names
the file, the dotted key and what is allowed (``config/x.yaml: runs.psft.lr: got -1; allowed: a number > 0, finite``).
A run's :class:`TrainConfig` is the profile's ``train`` defaults updated with ``runs.<name>``, then with ``--set``
or notebook overrides; each of these, and a ``TrainConfig(...)`` built in code, passes :func:`check_train_values`."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from psftlib.layout import CONFIG_DIR, ROOT, Layout
from psftlib.schema import (  # noqa: F401 - re-exported: callers import the schema's words from psftlib.config
    SCHEMA_PATH,
    ConfigError,
    allowed,
    check_bases_and_task_set_runs,
    check_train_values,
    objective_names,
    problem,
    schema_of_profiles,
    validator,
)

CODE_SOURCE = "TrainConfig"  # how errors name a TrainConfig(...) built in code
POST_DATA = {"small": {"grpo": "rl", "dpo": "prefs"},  # each post-training stage's data by world (Profile.post_data)
             "hub": {"grpo": "dapo_math_17k", "dpo": "ultrafeedback_prefs"}}  # fmt: skip


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
    loss_aggregation: str = "global_token_mean"  # | "micro_token_mean" (verl before late 2025): train/step.py
    seed: int = 0
    # PSFT (eq. 6) and its variants
    clip_low: float = 0.2  # ε_low (never acts for A = 1; see objectives.psft_loss)
    clip_high: float = 0.28  # ε_high; .inf = no clipping (§5.2)
    old_policy_refresh: str | int = "train_batch"  # "train_batch" | k (every k mini batches) | "never" (§5.3)
    sft_warmup_train_batches: int = 0  # plain SFT for this many train batches first ("PSFT + warm-up", §4.1)
    sft_warmup_lr: float | None = None  # lr during the SFT warm-up (None: same lr)
    # ... or for this share of an epoch, rounded to whole train batches (when the dataset's size is not known upfront)
    sft_warmup_epochs: float | None = None
    # train only the top-ρ highest-entropy tokens of a batch (App. C.2)
    entropy_top_fraction: float | None = None
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
    refresh_batch_size: int | None = None  # sequences per no-grad old-policy forward; None: one mini batch
    padding_free: bool = False  # each forward packs its sequences in one row, no padding (logprobs.pack)
    gradient_checkpointing: bool = False
    bf16: bool = False  # bf16 autocast (GPU only; ignored on CPU)
    fsdp: bool = False  # with several processes: shard parameters, gradients, AdamW states (FSDP2, per layer)
    lora_r: int = 0  # > 0: train LoRA adapters of this rank (peft); the reference is the adapters disabled
    lora_alpha: int = 16
    # telemetry and outputs
    token_sample_rate: float = 0.0  # share of trained tokens written to tokens.parquet (Figure 10)
    # every token of demonstrations 0..k-1, each time trained, to traces.parquet (report)
    trace_examples: int = 0
    checkpoint_every: int = 0  # save a resume state every this many optimizer steps (0: never)
    save_checkpoint: bool = True  # final Hugging Face checkpoint

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> TrainConfig:
        """:func:`check_train_values` (types, limits), then relations between fields; 16.0 for an int field -> 16."""
        for f in dataclasses.fields(self):
            if "int" in f.type and isinstance(value := getattr(self, f.name), float) and value.is_integer():
                setattr(self, f.name, int(value))
        check_train_values(vars(self), CODE_SOURCE)
        for big, small in (("train_batch_size", "mini_batch_size"), ("mini_batch_size", "micro_batch_size")):
            if (whole := getattr(self, big)) % (part := getattr(self, small)):
                raise ConfigError(f"{CODE_SOURCE}: {big}: {whole} is not a multiple of {small} {part}")
        if self.sft_warmup_train_batches and self.sft_warmup_epochs:
            raise ConfigError(
                f"{CODE_SOURCE}: sft_warmup_epochs: set it or sft_warmup_train_batches, not both"
            )
        psft_only = [k for k in ("sft_warmup_train_batches", "sft_warmup_epochs", "entropy_top_fraction")
                     if getattr(self, k)]  # fmt: skip
        if self.objective != "psft" and psft_only:
            raise ConfigError(f"{CODE_SOURCE}: {psft_only[0]}: PSFT only; objective is {self.objective!r}")
        return self

    @property
    def steps_per_train_batch(self) -> int:
        return self.train_batch_size // self.mini_batch_size

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "train config") -> TrainConfig:
        """A config from a mapping (the profile's ``train`` + ``runs.<run>`` + overrides); errors name ``source``."""
        check_train_values(values, source)  # unknown keys, types and limits, named with the source
        try:
            return cls(**values)
        except ConfigError as err:
            raise ConfigError(re.sub(f"^{CODE_SOURCE}: ", f"{source}: ", str(err), flags=re.M)) from None


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

    @property
    def task_set_runs(self) -> dict[str, list[str]]:
        """``eval.task_set_runs``: a task set -> the runs it alone is evaluated on (with their post-training runs)."""
        return dict((self.data.get("eval") or {}).get("task_set_runs") or {})

    def task_sets_of(self, run: str) -> list[str]:
        """The final task sets ``run`` is evaluated on: every set not restricted by ``eval.task_set_runs``, and those
        that name ``run`` or its cold start (``vlm_sft+grpo`` -> ``vlm_sft``); a ``<run>@selected`` checkpoint
        (Table 1) gets the unrestricted sets."""
        origin = run.split("+")[0]
        named = {
            s for s, runs in self.task_set_runs.items() if origin in runs and not run.endswith("@selected")
        }
        return [s for s in self.final_task_sets if s not in self.task_set_runs or s in named]

    def evaluations(self, runs: list[str]) -> list[tuple[str, str]]:
        """``(run, task set)`` of every final evaluation of ``runs`` (:meth:`task_sets_of`)."""
        return [(run, s) for run in runs for s in self.task_sets_of(run)]

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
    def base_runs(self) -> list[str]:
        """The untrained models evaluated as runs: ``base`` (the small world's base model), or a hub profile's
        ``paper.base_models`` (``base``, ``llama_base``, ``vlm_base``: the paper's "Base" rows, each a model role)."""
        return list((self.data.get("paper") or {}).get("base_models") or ["base"])

    @property
    def all_runs(self) -> list[str]:
        """Everything that gets a final evaluation: the base models, every run, every post-training run."""
        return [*self.base_runs, *self.runs, *self.post_runs]

    def base_of(self, run: str) -> str:
        """The base run of ``run`` (or of its post-training run): ``base`` in the small world; in a hub profile the
        ``paper.base_models`` entry of the run's model role (``align_sft+dpo`` -> ``align_base``, Qwen3-4B-Base)."""
        bases = (self.data.get("paper") or {}).get("base_models") or {}
        origin = run.split("+")[0].removesuffix("@selected")
        if not bases:
            return "base"
        role = bases[origin]["model"] if origin in bases else self.run_source(origin)["model"]
        if found := [name for name, spec in bases.items() if spec["model"] == role]:
            return found[0]
        raise ConfigError(
            f"{self.path}: paper.base_models: no entry of model {role!r}, the base of run {run!r}"
        )

    def base_model_id(self, run: str) -> str:
        """A hub profile's base run (``paper.base_models.<run>``) -> its model's hub id (``paper.models``)."""
        paper = self.data.get("paper") or {}
        if run not in (paper.get("base_models") or {}):
            raise ConfigError(f"{self.path}: paper.base_models.{run}: no such base model")
        return paper["models"][paper["base_models"][run]["model"]]

    def post_stage(self, stage: str, cold: str) -> tuple[dict[str, Any], Path]:
        """The settings and the data file of ``<cold>+<stage>``: the profile's ``<stage>`` section (without
        ``cold_starts``) updated with the cold start's own ``<stage>:`` entry (``paper.run_sources.<cold>`` or
        ``paper.base_models.<cold>``; §4.4's VLM: Geometry-3k prompts, 5k response tokens), whose ``dataset`` names
        the data (under ``paper.datasets``) in place of :meth:`post_data`'s."""
        paper = self.data.get("paper") or {}
        own = dict(({**(paper.get("run_sources") or {}), **(paper.get("base_models") or {})}.get(cold) or {})
                   .get(stage) or {})  # fmt: skip
        dataset = own.pop("dataset", None)
        section = {k: v for k, v in (self.data.get(stage) or {}).items() if k != "cold_starts"}
        return {**section, **own}, self.layout.data / f"{dataset}.jsonl" if dataset else self.post_data(stage)

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
        for key, table in (("model", "models"), ("data", "datasets")):
            if src[key] not in paper.get(table, {}):
                raise ConfigError(
                    f"{self.path}: paper.run_sources.{run}.{key}: {src[key]!r} is not under paper.{table}"
                )
        src["model_id"] = paper["models"][src["model"]]
        return src

    def post_data(self, stage: str) -> Path:
        """The data file post-training ``stage`` (``grpo`` / ``dpo``) reads: the small world's ``rl`` / ``prefs``; a hub
        profile's ``paper.datasets`` entry of the paper's RL prompts (§4.2) / preference pairs (§4.3)."""
        return self.layout.data / f"{POST_DATA[self.data['world']['kind']][stage]}.jsonl"

    @property
    def selected_runs(self) -> list[str]:
        """Table 1's runs evaluated at the checkpoint their in-training in-domain curve selects (§4.1.2), as
        ``<run>@selected``; none when the runs keep no curves (``eval.during_training.every_train_batches`` 0)."""
        during = (self.data.get("eval") or {}).get("during_training") or {}
        if not self.curves_task_set or not during.get("every_train_batches"):
            return []
        return [f"{r}@selected" for r in self.with_replicates(self.figure_runs("table1_main"))]

    def run_config(self, run: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
        if run not in self.data["runs"]:
            raise ConfigError(f"{self.path}: runs.{run}: no such run; defined runs: {self.runs}")
        overrides = overrides or {}  # --set, a notebook's overrides: checked with the rest
        values = {**self.data["train"], **(self.data["runs"][run] or {}), **overrides}
        values.setdefault("seed", self.data["seed"])
        return TrainConfig.from_dict(
            values, f"{self.path}: runs.{run}" + (f" with {overrides}" if overrides else "")
        )


def validate_profile(data: Any, source: str) -> None:
    """Raise :class:`ConfigError` naming ``source`` and the dotted key of the first schema violation."""
    if errors := sorted(validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        raise ConfigError("\n".join(f"{source}: {problem(e)}" for e in errors))
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
    frontier = data.get("frontier") or {}
    named = [
        (f"{stage}.cold_starts", (data.get(stage) or {}).get("cold_starts", [])) for stage in ("grpo", "dpo")
    ]
    named += [
        (f"calibration.{k}", v) for k, v in (data.get("calibration") or {}).items() if isinstance(v, list)
    ]
    named += [(f"frontier.methods.{method}", runs) for method, runs in frontier.get("methods", {}).items()]
    named += [(f"figures.{fig}.runs", spec.get("runs", [])) for fig, spec in data.get("figures", {}).items()]
    for key, run in ((key, run) for key, runs in named for run in runs if run not in data["runs"]):
        if (
            run not in profile.base_runs
            or not key.endswith((".cold_starts", ".runs"))
            or key.startswith("front")
        ):
            raise ConfigError(f"{source}: {key}: {run!r} is not defined under runs")
    check_bases_and_task_set_runs(data, profile.final_task_sets, profile.base_runs, source)
    if frontier and (ref := frontier["reference"]) not in frontier["methods"]:
        raise ConfigError(f"{source}: frontier.reference: {ref!r} is not one of frontier.methods")


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
    return [run, *(replicate_name(run, s) for s in rep["seeds"])] if run in rep.get("runs", []) else [run]


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
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    validate_profile(data, str(shown))
    return Profile(name=data["profile"], path=shown, data=copy.deepcopy(data))


def parse_overrides(items: list[str], source: str = "--set") -> dict[str, Any]:
    """``["lr=1e-5", "epochs=2"]`` -> ``{"lr": 1e-05, "epochs": 2.0}``: each value read as the first type of its
    TrainConfig field it fits (``float | None``: ``None``, else a float), else as YAML reads it; then checked
    (:func:`check_train_values`, naming ``source``, the key and what is allowed)."""
    kinds = {f.name: f.type.split(" | ") for f in dataclasses.fields(TrainConfig)}
    pairs = [[part.strip() for part in item.partition("=")] for item in items]
    if bad := [item for item, (_, eq, _) in zip(items, pairs, strict=True) if not eq]:
        raise ConfigError(f"{source} {bad[0]!r}: expected key=value")
    out = {key: _read(text, kinds.get(key, [])) for key, _, text in pairs}
    check_train_values(out, source)
    return out


def _read(text: str, kinds: list[str]) -> Any:
    """``text`` as the first of ``kinds`` (a field's types: ``int``, ``float``, ``bool``, ``str``, ``None``) it fits."""
    value = yaml.safe_load(text) if text else None
    for kind in kinds:
        with contextlib.suppress(ValueError, OverflowError):
            if kind == "None" and (value is None or text.lower() == "none"):
                return None
            if kind in ("int", "float") and not isinstance(value, (bool, type(None))):
                number = float(value if isinstance(value, (int, float)) else text)
                if kind == "float" or number.is_integer():
                    return number if kind == "float" else int(number)
            if kind == type(value).__name__:  # bool, str: as YAML reads them
                return value
    return value
