"""vad: video anomaly detection pipeline (decode -> snippets -> features -> cache -> head -> events)."""

__version__ = "0.1.0"
