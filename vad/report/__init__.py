"""What a person looks at: the HTML run report (:func:`write_report`) and the browser assets the
live dashboard shares with it (:mod:`vad.report.assets`)."""

from vad.report.collect import RunView, VideoView, collect_run
from vad.report.html import ReportOptions, ReportResult, write_report

__all__ = ["ReportOptions", "ReportResult", "RunView", "VideoView", "collect_run", "write_report"]
