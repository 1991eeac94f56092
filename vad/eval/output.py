"""The evaluation directory (``vad evaluate --out``): the one owner of its layout and formats.

Layout::

    <eval>/metrics.json      every metric, the per-class and per-video tables, alignment, exclusions
    <eval>/curves.json       pooled ROC and PR points for interactive charts (thinned, see below)
    <eval>/report.md         the same as text
    <eval>/plots/roc.png     pooled ROC; pr.png the precision-recall curve; videos/<id>.png
    <eval>/gt/<id>.npy       ground truth built from a dataset's annotations (when --gt was a name)

The HTML report reads an evaluation only through :class:`EvalDir`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vad.fsutil import write_json_atomic

__all__ = ["EvalDir", "thin_curve"]


def thin_curve(x: np.ndarray, y: np.ndarray, max_points: int = 2000) -> tuple[list[float], list[float]]:
    """At most ``max_points`` of a monotone curve, evenly spaced by index, both ends kept: a
    chart of a million-frame ROC needs its shape, not every threshold."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) > max_points:
        idx = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
        x, y = x[idx], y[idx]
    return [round(float(v), 6) for v in x], [round(float(v), 6) for v in y]


class EvalDir:
    """One evaluation directory; see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def curves_path(self) -> Path:
        return self.root / "curves.json"

    @property
    def report_md_path(self) -> Path:
        return self.root / "report.md"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    @property
    def built_gt_dir(self) -> Path:
        return self.root / "gt"

    def exists(self) -> bool:
        return self.metrics_path.is_file()

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json_atomic(self.metrics_path, json.loads(json.dumps(metrics, allow_nan=False, default=str)))

    def write_curves(self, fpr: np.ndarray, tpr: np.ndarray, recall: np.ndarray, precision: np.ndarray) -> None:
        roc_x, roc_y = thin_curve(fpr, tpr)
        pr_x, pr_y = thin_curve(recall, precision)
        write_json_atomic(self.curves_path, {"roc": {"fpr": roc_x, "tpr": roc_y},
                                             "pr": {"recall": pr_x, "precision": pr_y}})

    def read_metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics_path.read_text())

    def read_curves(self) -> dict[str, Any] | None:
        """The pooled curves, or None (an evaluation with a single class has none)."""
        if not self.curves_path.is_file():
            return None
        return json.loads(self.curves_path.read_text())

    def ground_truth_dir(self, metrics: dict[str, Any] | None = None) -> Path | None:
        """The folder of ``<id>.npy`` labels the evaluation used: the one it was given, or the
        one it built from a dataset's annotations."""
        if self.built_gt_dir.is_dir():
            return self.built_gt_dir
        given = (metrics or (self.read_metrics() if self.exists() else {})).get("ground_truth")
        return Path(given) if given and Path(given).is_dir() else None
