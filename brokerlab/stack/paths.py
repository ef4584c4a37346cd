"""Where the stack keeps its state: one git-ignored folder (BROKERLAB_HOME, default <repo>/.brokerlab)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def home() -> Path:
    return Path(os.environ.get("BROKERLAB_HOME") or REPO_ROOT / ".brokerlab").resolve()


def stack_dir(offset: int) -> Path:
    """Data, logs and pid files of the stack on one port set."""
    return home() / f"stack-p{offset}"


def cache_dir() -> Path:
    """Downloads shared by every stack (Kafka's jars)."""
    return home() / "cache"
