"""Prepare the course's Python environment (.venv) with nothing but the standard library.

`python3 -m brokerlab lab|test|stack ...` runs from a fresh clone: this module
creates .venv, installs the pinned requirements once (again only when they
change), then re-runs the command inside .venv.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("BROKERLAB_VENV") or REPO_ROOT / ".venv")
STAMP = VENV / ".brokerlab-installed"
MIN_PYTHON = (3, 10)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def in_course_env() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def requirements_digest() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "pyproject.toml"):
        digest.update((REPO_ROOT / name).read_bytes())
    return digest.hexdigest()


def fail(message: str) -> None:
    print(f"brokerlab: {message}", file=sys.stderr)
    raise SystemExit(2)


# JupyterLab settings the course ships (overrides.json of the course environment): code cells wrap long
# lines, so no cell scrolls sideways on a 1280x720 screen (tests/test_browser.py checks it).
LAB_OVERRIDES = {"@jupyterlab/notebook-extension:tracker": {"codeCellConfig": {"lineNumbers": False, "lineWrap": True}}}


def write_lab_overrides() -> Path:
    path = VENV / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(LAB_OVERRIDES, indent=2) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def ensure_venv() -> None:
    if sys.version_info < MIN_PYTHON:
        fail(f"Python {'.'.join(map(str, MIN_PYTHON))}+ is needed; this is {sys.version.split()[0]}.")
    if not venv_python().exists():
        print(f"brokerlab: creating the course environment in {VENV} ...", flush=True)
        result = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            hint = ("  Debian/Ubuntu: apt-get install -y python3-venv" if "ensurepip" in result.stdout + result.stderr
                    else "")
            fail(f"could not create a virtual environment:\n{result.stdout}{result.stderr}{hint}")
    write_lab_overrides()
    wanted = requirements_digest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    print("brokerlab: installing the pinned Python packages (once; about 30 s) ...", flush=True)
    pip = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    for args in (["-r", str(REPO_ROOT / "requirements.txt")], ["--no-deps", "-e", str(REPO_ROOT)]):
        if subprocess.run(pip + args).returncode != 0:
            fail("pip could not install the course's packages (see above); fix the cause and run the command again.")
    STAMP.write_text(wanted + "\n")


def reexec_in_venv(argv: list[str]) -> None:
    """Replace this process with the same command run by the course environment's Python."""
    ensure_venv()
    python = str(venv_python())
    os.execv(python, [python, "-m", "brokerlab", *argv])
