"""The schema of a profile (``config/schema.yaml``) and the one check of training settings against it.

:func:`check_train_values` is the check of one run's settings, wherever they come from (a profile, ``--set``, notebook
``overrides``, ``TrainConfig(...)`` in code); :func:`problem` and :func:`allowed` put a violation into words, the same
for all of them. ``psftlib.config`` validates whole profiles with :func:`validator` and re-exports what callers use."""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import jsonschema
import yaml

from psftlib.artifacts import load_artifacts
from psftlib.layout import CONFIG_DIR

SCHEMA_PATH = CONFIG_DIR / "schema.yaml"


class ConfigError(ValueError):
    """A profile or override that does not satisfy the schema; the message names file and key."""


def check_train_values(values: dict[str, Any], source: str) -> None:
    """The one check of training settings, wherever they come from (a profile's ``train`` / ``runs.<run>``, ``--set``,
    notebook ``overrides``, ``TrainConfig(...)`` in code): the schema's ``$defs.train`` (``config/schema.yaml``).
    A :class:`ConfigError` names ``source``, each key, the value and what is allowed there."""
    items = tuple((k, type(v), v if type(v).__hash__ else repr(v)) for k, v in values.items())  # a cache key
    if problems := _train_problems(items):
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))


def check_bases_and_task_set_runs(
    data: dict[str, Any], final_task_sets: list[str], bases: list[str], source: str
) -> None:
    """Cross-field checks of a profile mapping: ``paper.base_models`` name model roles (and no run);
    ``eval.task_set_runs`` name final task sets and runs or base models (``bases``: ``Profile.base_runs``)."""
    paper, runs = data.get("paper") or {}, list(data["runs"])
    for name, spec in (paper.get("base_models") or {}).items():
        if name in runs:
            raise ConfigError(
                f"{source}: paper.base_models.{name}: also a run under runs; give it another name"
            )
        if spec["model"] not in paper["models"]:
            raise ConfigError(
                f"{source}: paper.base_models.{name}.model: {spec['model']!r} is not under paper.models"
            )
        if (dataset := (spec.get("grpo") or {}).get("dataset")) and dataset not in paper["datasets"]:
            raise ConfigError(
                f"{source}: paper.base_models.{name}.grpo.dataset: {dataset!r} is not under paper.datasets"
            )
    restricted = (data.get("eval") or {}).get("task_set_runs") or {}
    if restricted and data["world"]["kind"] != "hub":
        raise ConfigError(f"{source}: eval.task_set_runs: hub profiles only (rules/hub.smk's eval_only)")
    for task_set, named in restricted.items():
        if task_set not in final_task_sets:
            raise ConfigError(
                f"{source}: eval.task_set_runs.{task_set}: not a final task set ({final_task_sets})"
            )
        for run in (r for r in named if r not in [*bases, *runs]):
            raise ConfigError(
                f"{source}: eval.task_set_runs.{task_set}: {run!r} is neither a run nor a base model ({bases})"
            )


@functools.lru_cache(maxsize=4096)  # a profile's runs share most values; a check costs ~1 ms
def _train_problems(items: tuple[tuple[str, type, Any], ...]) -> list[str]:
    values = {key: value for key, _, value in items}
    if unknown := sorted(set(values) - set(known := schema_of_profiles()["$defs"]["train"]["properties"])):
        return [f"unknown key(s) {unknown}; known: {sorted(known)}"]
    return [problem(e) for e in sorted(validator("train").iter_errors(values), key=lambda e: list(e.path))]


@functools.cache
def schema_of_profiles() -> dict[str, Any]:
    """``config/schema.yaml`` with ``figures:`` accepting every artifact of ``config/artifacts.yaml`` that takes its
    runs from the profile (``when: figures``)."""
    with open(SCHEMA_PATH) as f:
        schema = yaml.safe_load(f)
    names = [name for name, art in load_artifacts().items() if art.when == "figures"]
    schema["properties"]["figures"]["properties"] = {name: {"$ref": "#/$defs/figure"} for name in names}
    return schema


def _finite_type(validator: Any, types: Any, x: Any, schema: dict[str, Any]) -> Any:
    """JSON schema's ``type``, and a number must be finite (``.inf`` only where the schema says ``infinite: true``)."""
    yield from jsonschema.Draft202012Validator.VALIDATORS["type"](validator, types, x, schema)
    if isinstance(x, float) and not (math.isfinite(x) or (x > 0 and schema.get("infinite"))):
        yield jsonschema.ValidationError(f"{x!r} is not a finite number")


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"type": _finite_type})


@functools.cache
def validator(defn: str | None = None) -> Any:
    """A validator of the whole schema (a profile), or of ``$defs.<defn>`` (``train``: one run's settings)."""
    schema = copy.deepcopy(schema_of_profiles())
    return _Validator({"$ref": f"#/$defs/{defn}", "$defs": schema["$defs"]} if defn else schema)


def problem(err: jsonschema.ValidationError) -> str:
    """One schema violation as ``<dotted key>: got <value>; allowed: <what the schema allows there>`` (the same
    words for a profile, ``--set``, notebook overrides and ``TrainConfig(...)``)."""
    key = ".".join(map(str, err.absolute_path)) or "<top level>"
    if err.validator in ("type", "enum", "oneOf", "anyOf", "pattern") or "imum" in err.validator:
        return f"{key}: got {err.instance!r}; allowed: {allowed(err.schema)}"
    if err.validator == "additionalProperties" and "properties" in err.schema:
        return f"{key}: {err.message}; allowed keys: {sorted(err.schema['properties'])}"
    return f"{key}: {err.message}"


def allowed(schema: dict[str, Any]) -> str:
    """What a schema node accepts, in words: ``a number > 0, finite``, ``an integer >= 1 or null``, ``one of [...]``."""
    schema = (
        {**schema_of_profiles()["$defs"][schema["$ref"].rsplit("/", 1)[1]], **schema}
        if "$ref" in schema
        else schema
    )
    if alternatives := schema.get("oneOf") or schema.get("anyOf"):
        return " or ".join(map(allowed, alternatives))
    if "enum" in schema:
        return f"one of {schema['enum']}"
    types = [schema["type"]] if isinstance(schema.get("type"), str) else schema.get("type", [])
    nouns = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false"}
    ops = {"exclusiveMinimum": ">", "minimum": ">=", "exclusiveMaximum": "<", "maximum": "<="}
    words = " or ".join(nouns.get(t, t) for t in types if t != "null") or "a value"
    words += " and".join(f" {op} {schema[k]}" for k, op in ops.items() if k in schema)
    if "number" in types:
        words += " (.inf allowed)" if schema.get("infinite") else ", finite"
    words += f" matching {schema['pattern']}" if "pattern" in schema else ""
    return words + (" or null" if "null" in types else "")


def objective_names() -> list[str]:
    """The training objectives the schema accepts (``psftlib.objectives.OBJECTIVES``; a test checks they agree)."""
    return list(schema_of_profiles()["$defs"]["train"]["properties"]["objective"]["enum"])
