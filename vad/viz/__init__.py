"""Plots (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from vad.fsutil import atomic_path
from vad.utils import runs


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_scores(
    path: str | Path,
    scores: np.ndarray,
    fps: float | None,
    *,
    title: str = "",
    threshold: float | None = None,
    events: Sequence[object] = (),
    ground_truth: np.ndarray | None = None,
    reference_frames: int | None = None,
) -> Path:
    """Score over time; events as orange spans, ground-truth anomalies as red spans,
    the reference part (when the head used the start of the video) as a grey span.
    With ``fps=None`` the x axis is in frames. Events with an ``explanation`` are numbered at
    their peak and their explanations listed under the plot (the first 8)."""
    import textwrap

    plt = _pyplot()
    scores = np.asarray(scores, dtype=np.float64)
    x_label = "time (s)" if fps else "frame"
    fps = fps or 1.0
    t = np.arange(len(scores)) / fps
    explained = [ev for ev in events if getattr(ev, "explanation", None) or getattr(ev, "explanation_error", None)][:8]
    notes = [textwrap.shorten(f"{i + 1}: " + (ev.explanation or f"(no explanation: {ev.explanation_error})"),
                              150, placeholder=" ...") for i, ev in enumerate(explained)]
    fig, ax = plt.subplots(figsize=(10, 3.2 + 0.22 * len(notes)), dpi=100)
    try:
        if reference_frames:
            ax.axvspan(0, reference_frames / fps, color="0.85", label="reference (normal) part")
        if ground_truth is not None:
            for i, (a, b) in enumerate(runs(ground_truth[: len(scores)])):
                ax.axvspan(a / fps, b / fps, color="tab:red", alpha=0.25,
                           label="ground-truth anomaly" if i == 0 else None)
        for i, ev in enumerate(events):
            ax.axvspan(ev.start_s, ev.end_s, color="tab:orange", alpha=0.3,
                       label="detected event" if i == 0 else None)
        ax.plot(t, scores, color="tab:blue", lw=1.2, label="anomaly score")
        for i, ev in enumerate(explained):
            ax.annotate(str(i + 1), (ev.peak_frame / fps, ev.peak_score), textcoords="offset points", xytext=(0, 4),
                        ha="center", fontsize=8, fontweight="bold", color="tab:red")
        if threshold is not None:
            ax.axhline(threshold, color="tab:orange", ls="--", lw=1, label=f"threshold {threshold:g}")
        ax.set_xlabel(x_label)
        ax.set_ylabel("score")
        ax.set_xlim(0, max(t[-1] if len(t) else 0, 1 / fps))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
        if notes:
            fig.text(0.01, 0.01, "\n".join(notes), fontsize=7, va="bottom", ha="left", family="monospace")
            fig.tight_layout(rect=(0, 0.22 * len(notes) / (3.2 + 0.22 * len(notes)) + 0.01, 1, 1))
        else:
            fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_curve(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray,
    *,
    kind: str,
    label: str,
    title: str = "",
) -> Path:
    """A ROC (``kind="roc"``: x = FPR, y = TPR) or PR (``kind="pr"``: x = recall, y = precision) curve."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4), dpi=100)
    try:
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="chance")
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
        else:
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
        ax.plot(x, y, color="tab:blue", lw=1.5, label=label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)
