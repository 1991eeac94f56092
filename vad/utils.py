"""Small helpers shared across the package."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["runs", "sha256_file"]


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in ``chunk_size`` pieces so large weights never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def runs(mask: "np.ndarray") -> list[tuple[int, int]]:
    """``(start, end_exclusive)`` of every run of non-zero values in a 1-D array."""
    import numpy as np

    edges = np.diff(np.concatenate(([0], np.asarray(mask).astype(bool).astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))
