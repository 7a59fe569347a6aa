"""The pip lock and its conda form pin the same packages; pyproject's dependencies are all in the lock."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_requirements_lock_and_environment_lock_agree():
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.lock.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict))
    assert _pins(pip_section) == lock
    assert lock["torch"] == "2.13.0"


def test_every_pyproject_dependency_is_pinned_in_the_lock():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    deps = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        deps += [d for d in items if not d.startswith("psftlib")]
        assert items, extra
    for dep in deps:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=\[ ]", dep)[0]).lower()
        assert name in lock, f"{dep} is not pinned in requirements.lock"
