"""Plots (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from vad.fsutil import atomic_path


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], (np.asarray(labels) > 0).astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def plot_scores(
    path: str | Path,
    scores: np.ndarray,
    fps: float,
    *,
    title: str = "",
    threshold: float | None = None,
    events: Sequence[object] = (),
    ground_truth: np.ndarray | None = None,
    reference_frames: int | None = None,
) -> Path:
    """Score over time; events as orange spans, ground-truth anomalies as red spans,
    the reference part (when the head used the start of the video) as a grey span."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = np.asarray(scores, dtype=np.float64)
    t = np.arange(len(scores)) / fps
    fig, ax = plt.subplots(figsize=(10, 3.2), dpi=100)
    try:
        if reference_frames:
            ax.axvspan(0, reference_frames / fps, color="0.85", label="reference (normal) part")
        if ground_truth is not None:
            for i, (a, b) in enumerate(_runs(ground_truth[: len(scores)])):
                ax.axvspan(a / fps, b / fps, color="tab:red", alpha=0.25,
                           label="ground-truth anomaly" if i == 0 else None)
        for i, ev in enumerate(events):
            ax.axvspan(ev.start_s, ev.end_s, color="tab:orange", alpha=0.3,
                       label="detected event" if i == 0 else None)
        ax.plot(t, scores, color="tab:blue", lw=1.2, label="anomaly score")
        if threshold is not None:
            ax.axhline(threshold, color="tab:orange", ls="--", lw=1, label=f"threshold {threshold:g}")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("score")
        ax.set_xlim(0, max(t[-1] if len(t) else 0, 1 / fps))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
