"""Where vad's files live: the source checkout and the data directory.

A leaf module (standard library only) so that the asset fetchers and the weight loaders can
both find the data directory without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "repo_root"]


def repo_root() -> Path | None:
    """The source checkout this package runs from, if any (editable installs)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def data_dir() -> Path:
    """``$VAD_DATA_DIR``, else ``<checkout>/data``, else ``~/.cache/vad``."""
    env = os.environ.get("VAD_DATA_DIR")
    if env:
        return Path(env)
    root = repo_root()
    return root / "data" if root else Path.home() / ".cache" / "vad"
