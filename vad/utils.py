"""Small helpers shared across the package."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["cpu_info", "runs", "sha256_file"]


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


def cpu_info() -> dict[str, object]:
    """The CPU benchmarks ran on: model name, vector extensions that change the numbers (AVX2,
    AVX-512) and core counts. The first core's /proc/cpuinfo entries stand for all."""
    import os
    import platform

    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value
    except OSError:  # not Linux
        pass
    names = set(flags.split())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": model or platform.processor() or "unknown", "avx2": "avx2" in names,
            "avx512f": "avx512f" in names, "cores": os.cpu_count(), "usable_cores": usable}
