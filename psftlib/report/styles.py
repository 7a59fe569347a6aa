"""One style per run of a profile, derived from the run's configuration, the same in every figure.

Colour by method (the objective; PSFT with an SFT warm-up is a method of its own, as in the paper), line style and
shade by variant (what the run's configuration changes against its method's reference run, the run named after
the objective), and a legend name in words (``"SFT at PSFT's step structure and lr"``, ``"PSFT, lr 3e-05"``). A
run added to a profile gets a style without editing anything here; its seed replicates (``seed_replicates``) share
its style (figures draw them as a band), post-training runs (``<cold start>+grpo``) take their cold start's.

Within a method the reference run is drawn solid in the method's colour; the others, in a fixed order of what they
change, get the pairs (line style i mod 5, shade i mod 3), so up to 15 runs per method have distinct pairs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from matplotlib.colors import to_hex, to_rgb

from psftlib.config import Profile, TrainConfig, load_profile, replicates

# method -> (legend name, colour); methods not listed take a FALLBACK colour in the order they appear
METHODS: dict[str, tuple[str, str]] = {
    "sft": ("SFT", "#d62728"),
    "sft_kl": ("SFT-KL", "#ff7f0e"),
    "psft": ("PSFT", "#1f77b4"),
    "psft_warmup": ("PSFT + warm-up", "#2ca02c"),
    "sft_as_psft": ("SFT at PSFT's step structure", "#e377c2"),  # our control: PSFT without its clip
    "dft": ("DFT", "#9467bd"),
    "iw_sft": ("iw-SFT", "#8c564b"),
}
FALLBACK = ["#17becf", "#bcbd22", "#7f7f7f", "#000000"]
BASE_COLOR = "#555555"
LINESTYLES: list[Any] = ["-", "--", "-.", ":", (0, (6, 1.5, 1, 1.5, 1, 1.5))]
SHADES = [0.0, -0.35, 0.4]  # mix with black (< 0) or white (> 0)
STAGES = {"grpo": "GRPO", "dpo": "DPO"}

# fields that change neither the maths nor the data a run sees (memory, telemetry, checkpoints); seed: replicates
NOT_A_VARIANT = {
    "micro_batch_size", "mini_batch_size", "seed", "logprob_chunk_size", "refresh_batch_size",
    "gradient_checkpointing", "fsdp", "padding_free", "token_sample_rate", "trace_examples", "checkpoint_every", "save_checkpoint",
    "objective",
}  # fmt: skip
# the order variants are listed in within a method (first: the controls and learning-rate grids)
FIELD_ORDER = ["steps_per_train_batch", "lr", "sft_warmup_train_batches", "sft_warmup_epochs", "sft_warmup_lr", "epochs",
               "clip_high", "clip_low", "old_policy_refresh", "entropy_top_fraction"]  # fmt: skip


@dataclass(frozen=True)
class Style:
    """How one run is drawn: ``kw`` goes to ``Axes.plot``."""

    color: str
    ls: Any
    label: str
    method: str  # key of METHODS (or the objective)
    control: bool = False  # takes another method's learning rate or step structure (our controls)

    @property
    def kw(self) -> dict[str, Any]:
        return {"color": self.color, "ls": self.ls, "label": self.label}


def _shade(color: str, amount: float) -> str:
    rgb = to_rgb(color)
    target = 0.0 if amount < 0 else 1.0
    return to_hex(tuple(c + abs(amount) * (target - c) for c in rgb))


def _method(cfg: TrainConfig, steps: dict[str, int]) -> str:
    """The method a run belongs to: its objective, PSFT + warm-up, or ``<objective>_as_<other>`` (an objective at
    another objective's step structure; ``steps``: each objective's reference steps per train batch)."""
    if cfg.objective == "psft" and (cfg.sft_warmup_train_batches > 0 or cfg.sft_warmup_epochs):
        return "psft_warmup"
    own = steps.get(cfg.objective, cfg.steps_per_train_batch)
    other = next((o for o, n in steps.items() if o != cfg.objective and n == cfg.steps_per_train_batch), None)
    return f"{cfg.objective}_as_{other}" if cfg.steps_per_train_batch != own and other else cfg.objective


def _maths(cfg: TrainConfig) -> dict[str, Any]:
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in NOT_A_VARIANT}
    return {**values, "steps_per_train_batch": cfg.steps_per_train_batch}


def _num(value: Any) -> str:
    """A setting as written in a profile: 3e-5, 1.5e-4, 0.4, ∞."""
    if not isinstance(value, float):
        return str(value)
    if value == math.inf:
        return "∞"
    if value and abs(value) < 1e-2:
        mantissa, exponent = f"{value:.3e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:g}"


def _phrase(field: str, value: Any) -> str | None:
    """A run's setting in words; None for settings the method's name already says (the warm-up's lr)."""
    if field == "steps_per_train_batch":
        return f"{value} optimizer steps per train batch"
    if field == "lr":
        return f"lr {_num(value)}"
    if field == "clip_high":
        return "no clip (ε_high = ∞)" if value == math.inf else f"ε_high {_num(value)}"
    if field == "old_policy_refresh":
        return (
            "old policy never refreshed"
            if value == "never"
            else f"old policy refreshed every {value} mini batches"
        )
    if field == "entropy_top_fraction":
        return f"only the {value:.0%} highest-entropy tokens"
    if field == "epochs":
        return f"{_num(value)} epochs"
    if field == "sft_warmup_train_batches":
        return f"{value} train batches of SFT warm-up"
    if field == "sft_warmup_epochs":
        return f"{_num(value)} epochs of SFT warm-up"
    if field == "sft_warmup_lr":
        return None
    return f"{field.replace('_', ' ')} {_num(value)}"


def _label(objective: str, diffs: dict[str, Any], references: dict[str, dict[str, Any]]) -> tuple[str, bool]:
    """The legend name from what a run changes against its objective's reference run; True when it takes another
    objective's lr or step structure (a control)."""
    name = METHODS.get(objective, (objective.upper().replace("_", "-"), ""))[0]
    borrowed: dict[str, list[str]] = {}  # other method's name -> what is taken from it
    rest = []
    for field in sorted(diffs, key=lambda f: _rank(f)):
        value = diffs[field]
        other = next((m for m, ref in sorted(references.items(), key=lambda mr: _known(mr[0])) if m != objective and field in ("lr", "steps_per_train_batch")
                      and ref.get(field) == value), None)  # fmt: skip
        if other is not None:
            what = "step structure" if field == "steps_per_train_batch" else "lr"
            borrowed.setdefault(METHODS.get(other, (other.upper(),))[0], []).append(what)
        elif (phrase := _phrase(field, value)) is not None:
            rest.append(phrase)
    if (
        "step structure" in [w for ws in borrowed.values() for w in ws] and "lr" not in diffs
    ):  # e.g. SFT's lr at PSFT's steps
        rest.insert(0, f"lr {_num(references[objective]['lr'])} ({name}'s)")
    if "sft_warmup_train_batches" in diffs:
        name = f"{name} + warm-up ({diffs['sft_warmup_train_batches']} train batches)"
        rest = [p for p in rest if "warm-up" not in p]
    elif diffs.get("sft_warmup_epochs"):
        name = f"{name} + warm-up ({_num(diffs['sft_warmup_epochs'])} epochs)"
        rest = [p for p in rest if "warm-up" not in p]
    at = " and ".join(f"{other}'s {' and '.join(w)}" for other, w in borrowed.items())
    label = f"{name} at {at}" if at else name
    return (", ".join([label, *rest]) if rest else label), bool(borrowed)


def _known(method: str) -> int:
    """METHODS' order (SFT first): whose lr a run borrows when several methods share it."""
    return list(METHODS).index(method) if method in METHODS else len(METHODS)


def _rank(field: str) -> int:
    return FIELD_ORDER.index(field) if field in FIELD_ORDER else len(FIELD_ORDER)


def _order(diffs: dict[str, Any]) -> tuple:
    """Where a run comes within its method: the reference first, then by what it changes and to what."""
    fields = sorted(diffs, key=lambda f: _rank(f))
    values = [
        (0, v, "") if isinstance(v, int | float) else (1, 0, str(v)) for v in (diffs[f] for f in fields)
    ]
    return (len(fields) > 0, [_rank(f) for f in fields], values)


def style_table(profile: str | Profile) -> dict[str, Style]:
    """Every run of ``profile`` (seed replicates included), its post-training runs and ``base`` -> its Style."""
    prof = load_profile(profile)
    replica_of = {r: run for run in prof.runs for r in replicates(prof, run)[1:]}
    primary = [r for r in prof.runs if r not in replica_of]
    configs = {r: prof.run_config(r) for r in primary}
    # each objective's reference: the run named after it, else the profile's train defaults with that objective
    references = {}
    for objective in dict.fromkeys(c.objective for c in configs.values()):
        ref = configs.get(objective)
        use = ref if ref is not None and ref.objective == objective else None
        references[objective] = _maths(
            use or TrainConfig.from_dict({**prof["train"], "objective": objective})
        )
    steps = {o: ref["steps_per_train_batch"] for o, ref in references.items()}
    methods = {r: _method(c, steps) for r, c in configs.items()}
    fallback = iter(FALLBACK * 4)
    colors = {m: METHODS[m][1] if m in METHODS else next(fallback) for m in dict.fromkeys(methods.values())}

    bases = (prof.data.get("paper") or {}).get("base_models") or {
        "base": {}
    }  # the "Base" rows of a hub profile
    table: dict[str, Style] = {b: Style(BASE_COLOR, ":", "base model" if b == "base" else f"base model ({spec['model']})",
                                        "base") for b, spec in bases.items()}  # fmt: skip
    for m, color in colors.items():
        runs = [r for r in primary if methods[r] == m]
        # within a method: against its own reference run (the run named after it) where there is one
        own = (
            _maths(configs[m]) if m in configs and methods[m] == m else references[configs[runs[0]].objective]
        )
        for i, run in enumerate(sorted(runs, key=lambda r: _order({k: v for k, v in _maths(configs[r]).items()
                                                                   if own.get(k) != v}))):  # fmt: skip
            ref = references[configs[run].objective]
            label, control = _label(configs[run].objective,
                                    {k: v for k, v in _maths(configs[run]).items() if ref.get(k) != v}, references)  # fmt: skip
            table[run] = Style(_shade(color, SHADES[i % len(SHADES)]), LINESTYLES[i % len(LINESTYLES)], label, m,
                               control)  # fmt: skip
    for copy, run in replica_of.items():
        table[copy] = table[run]
    for post in prof.post_runs:
        cold, stage = post.rsplit("+", 1)
        s = table[cold]
        table[post] = dataclasses.replace(s, label=f"{s.label} → {STAGES.get(stage, stage.upper())}")
    return table


def style(profile: str | Profile, run: str) -> Style:
    """The Style of one run (:func:`style_table`); a clear error for a run the profile does not define."""
    table = style_table(profile)
    if run not in table:
        raise KeyError(f"{profile}: no run {run!r} to style; runs: {sorted(table)}")
    return table[run]
