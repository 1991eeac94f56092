"""Heads turn snippet features into anomaly scores."""

from vad.heads.reference import ReferenceHead, ReferenceHeadConfig, ledoit_wolf

__all__ = ["ReferenceHead", "ReferenceHeadConfig", "ledoit_wolf"]
