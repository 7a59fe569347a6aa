"""The image-text evaluation datasets (Table 5) of the tiny hub world (:mod:`psftlib.worlds.stand_ins`), laid out as
the hub holds them, so that lm-eval's ``load_dataset(<hub id>, <config>)`` reads them unchanged::

    <eval dataset id>/README.md                          configs -> split -> parquet file (the hub's dataset card)
    <eval dataset id>/<config>/<split>-00000-of-00001.parquet   tests/fixtures/paper_<task>.jsonl, its image files
                                                         (names relative to tests/fixtures) embedded as Image features

A task takes images when its YAML (``psftlib/eval/tasks/images/*.yaml``) has ``doc_to_image``; its ``metadata`` names
the image columns (``image_fields``) and, where the task reads several configs (MMMU's 30 subjects), ``hub_configs``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

IMAGE_TASKS = Path(__file__).resolve().parent.parent / "eval" / "tasks" / "images"


def image_tasks() -> dict[str, dict[str, Any]]:
    """``task -> its YAML`` (``!function`` tags as strings) of every task in ``IMAGE_TASKS`` that takes images."""
    out = {}
    for path in sorted(IMAGE_TASKS.glob("*.yaml")):
        raw = yaml.load(path.read_text(), Loader=_TagsAsText)
        if "doc_to_image" in raw:
            out[raw["task"]] = raw
    return out


class _TagsAsText(yaml.SafeLoader):
    """A YAML loader that reads lm-eval's ``!function`` tags as plain strings."""


_TagsAsText.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node))


def _slug(config: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", config).strip("_")


def image_dataset(fixture: Path, image_fields: list[str]) -> Any:
    """The rows of ``fixture`` (JSONL) as a ``datasets.Dataset`` whose ``image_fields`` (file names relative to the
    fixture's folder, lists of them, or null) are Image features holding the files' bytes."""
    import datasets

    def image(name: str | None) -> dict[str, Any] | None:
        return (
            None if name is None else {"bytes": (fixture.parent / name).read_bytes(), "path": Path(name).name}
        )

    rows = [json.loads(line) for line in fixture.read_text().splitlines() if line.strip()]
    listed = {f for f in image_fields if any(isinstance(r.get(f), list) for r in rows)}
    rows = [{k: ([image(n) for n in v] if k in listed else image(v)) if k in image_fields else v for k, v in r.items()}
            for r in rows]  # fmt: skip
    ds = datasets.Dataset.from_list(rows)
    for field in image_fields:
        if field in ds.column_names:
            ds = ds.cast_column(
                field, datasets.List(datasets.Image()) if field in listed else datasets.Image()
            )
    return ds


def write_image_datasets(root: Path, fixtures: Path) -> list[str]:
    """Each image task's fixture ``fixtures/<task>.jsonl`` under ``root/<hub id>/`` as the hub lays it out (every
    config of ``hub_configs`` gets the same rows); returns the files written."""
    written = []
    for task, raw in image_tasks().items():
        meta = raw.get("metadata") or {}
        hub_id, split = (
            meta.get("path", raw["dataset_path"]),
            meta.get("split", raw.get("test_split", "test")),
        )
        configs = meta.get("hub_configs") or [raw.get("dataset_name") or "default"]
        ds = image_dataset(fixtures / f"{task}.jsonl", meta.get("image_fields", []))
        card = []
        for config in configs:
            rel = f"{_slug(config)}/{split}-00000-of-00001.parquet"
            (root / hub_id / rel).parent.mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(root / hub_id / rel))
            card.append({"config_name": config, "data_files": [{"split": split, "path": rel}]})
            written.append(f"{hub_id}/{rel}")
        (root / hub_id / "README.md").write_text(
            f"---\n{yaml.safe_dump({'configs': card}, sort_keys=False)}---\n"
        )
    return written
