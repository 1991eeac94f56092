"""Snippet feature extractors (I3D, ...). Import the submodules directly, e.g. ``vad.features.i3d``."""
