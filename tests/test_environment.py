"""environment.yml and environment-cpu.yml agree with pyproject.toml (the pins users install)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["dependencies"]) | set(project["optional-dependencies"]["test"])


def _pip_section(name: str) -> list[str]:
    env = yaml.safe_load((ROOT / name).read_text())
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, f"{name}: one pip section expected"
    return [str(item) for item in sections[0]]


def _strip_comment(requirement: str) -> str:
    return requirement.split("#")[0].strip()


def test_environment_yml_pins_are_pyprojects():
    pins = {r for r in _pip_section("environment.yml") if not r.startswith("-")}
    assert pins == {_strip_comment(r) for r in _pyproject_requirements()}


def test_cpu_environment_takes_torch_cpu_builds_at_the_pinned_versions():
    pip = _pip_section("environment-cpu.yml")
    pinned = {r.split("==")[0]: r.split("==")[1] for r in _pyproject_requirements() if r.startswith("torch")}
    assert pinned.keys() == {"torch", "torchvision"}
    for name, version in pinned.items():
        assert f"{name}=={version}+cpu" in pip
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pip
    assert "-e .[test]" in pip
