"""requirements.txt is the pinned list; environment.yml mirrors it for conda users."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s#]+)")


def requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = PIN.match(line)
            assert match, f"requirements.txt: {line!r} is not pinned with =="
            pins[match.group(1).lower()] = match.group(2)
    return pins


def environment() -> tuple[dict[str, str], list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = {}
    for entry in pip:
        if entry.startswith("-e"):
            continue
        match = PIN.match(entry)
        assert match, f"environment.yml: {entry!r} is not pinned with =="
        pins[match.group(1).lower()] = match.group(2)
    return pins, conda


def test_every_dependency_is_pinned_and_explained():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if PIN.match(line.strip()):
            assert "#" in line, f"say why {line.split('==')[0]} is there"


def test_environment_yml_names_the_same_packages_at_the_same_versions():
    pip_pins, conda = environment()
    assert pip_pins == requirements()
    assert any(d.startswith("python=") for d in conda)
