"""Jobs composed from :mod:`vad` parts (scoring, extraction, evaluation); owns parallelism."""
