"""Turning command-line inputs (files, folders, list files) into a list of videos with ids."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vad.io import folder_images

logger = logging.getLogger(__name__)

LIST_SUFFIXES = (".txt", ".list", ".lst")


@dataclass(frozen=True)
class VideoItem:
    """One input video: where it is and the id its outputs are named by."""

    path: Path
    video_id: str


def _read_list(path: Path) -> list[Path]:
    """One path per line; blank lines and ``#`` comments skipped; relative to the list's folder."""
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        out.append(p if p.is_absolute() else path.parent / p)
    return out


def expand_inputs(inputs: Sequence[str | Path], extensions: Sequence[str]) -> list[Path]:
    """Files stay as given (even if missing or not videos: they become error records later),
    folders are searched recursively by extension, list files are read. A folder of frame images
    (the UCSD Ped2 / CUHK Avenue / ShanghaiTech layout) is one input, itself or found inside."""
    exts = {e.lower() for e in extensions}
    paths: list[Path] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir() and _is_frame_folder(p, exts):
            paths.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if (f.is_file() and f.suffix.lower() in exts)
                           or (f.is_dir() and _is_frame_folder(f, exts)))
            if not found:
                logger.warning("folder %s holds no videos with extensions %s", p, sorted(exts))
            paths.extend(found)
        elif p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            paths.extend(_read_list(p))
        else:
            paths.append(p)
    # The same file named twice is scored once.
    seen: set[Path] = set()
    unique = []
    for p in paths:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _is_frame_folder(folder: Path, video_exts: set[str]) -> bool:
    """Image frames directly inside and no video beside them."""
    if any(f.suffix.lower() in video_exts for f in folder.iterdir() if f.is_file()):
        return False
    return bool(folder_images(folder))


def assign_ids(paths: Sequence[Path]) -> list[VideoItem]:
    """Video id = file stem; stems that collide get a short hash of the full path appended."""
    stems: dict[str, int] = {}
    for p in paths:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    items = []
    for p in paths:
        vid = p.stem
        if stems[vid] > 1:
            vid = f"{vid}-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]}"
        items.append(VideoItem(path=p, video_id=vid))
    return items
