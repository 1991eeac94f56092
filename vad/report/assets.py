"""Browser assets of the report and the live dashboard, all local (pages open with no network).

The chart library is Plotly.js as shipped inside the ``plotly`` Python package (a maintained
library, vendored by its own wheel): pages inline it or reference one copy beside them. Our own
CSS and JavaScript (tables, the dashboard's live updates) are package data in ``static/``.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

__all__ = ["plotly_js", "plotly_js_path", "plotly_version", "static_text"]


def plotly_js_path() -> Path:
    """The installed ``plotly`` package's minified Plotly.js bundle."""
    try:
        path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    except ModuleNotFoundError as err:
        raise RuntimeError("the report's charts need the `plotly` package (pip install plotly)") from err
    if not path.is_file():
        raise RuntimeError(f"the plotly package has no {path.name} (reinstall plotly)")
    return path


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    """The bundle's text (inlined in a self-contained report, served by the dashboard)."""
    return plotly_js_path().read_text(encoding="utf-8")


def plotly_version() -> str:
    import plotly

    return str(plotly.__version__)


@functools.lru_cache(maxsize=None)
def static_text(name: str) -> str:
    """One of our own static files (``vad/report/static/<name>``)."""
    return (resources.files("vad.report") / "static" / name).read_text(encoding="utf-8")
