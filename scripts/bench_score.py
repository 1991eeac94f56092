#!/usr/bin/env python
"""Benchmark the scoring path: decoding, I3D extraction, end-to-end `vad score`, peak memory.

Every ratio is taken against a baseline measured in the same run, on the same machine and the
same files, so numbers from different machines are not mixed.

Test videos
    Synthetic 30 fps 640x360 H.264 ``.mp4`` (libx264, yuv420p, crf 23, keyframe every 60
    frames): a blurred-noise texture that pans slowly, a few rectangles moving and bouncing, and
    fresh low-amplitude noise in one corner per frame, so the encoder produces ordinary P/B frames rather than
    near-empty ones. Frame ``i`` is the same in every length, so a short video is the start of a
    long one. Videos are cached in ``--work`` under a name holding every parameter. With
    ``--video PATH`` the given file is used instead: each length is its first N frames,
    re-encoded with the same settings (the whole file when it is shorter).

Sections (``--sections``, default all)
    ``decode``   Decode-only throughput, frames/s, of each backend (decord, pyav, opencv) through
                 ``vad.io.open_video``: every frame of the e2e video read in consecutive ranges
                 of 16 frames, once resized to short side 256 (what the pipeline asks for) and
                 once at native size. Opening (probe included) is inside the timing.
    ``extract``  I3D extraction throughput, snippets/s, on a video cut to exactly
                 ``16 * --extract-snippets`` frames.
                 *Naive baseline* (implemented here, the reference point): ``cv2.VideoCapture``
                 reads every frame, ``cvtColor`` BGR->RGB, ``cv2.resize`` (INTER_LINEAR) to
                 short side 256, centre crop 224; every 16 frames one fp32 forward of batch 1
                 under ``torch.no_grad()`` with the model as ``load_i3d`` returns it, torch's
                 default threads, no overlap of decoding and inference. Model loading is timed
                 separately and left out of its snippets/s.
                 *Pipeline*: ``vad extract VIDEO --executor local --crop center`` into a fresh
                 cache, as a subprocess. snippets/s = n_snippets / ``stages_s.pipeline_wall_s``
                 from its ``summary.json`` (decode + extraction after the model is loaded, so
                 comparable with the naive figure); the whole command's wall time (interpreter
                 start, imports, weights) is reported beside it. The cached features are compared
                 with the naive ones (cosine per snippet) to show both computed the same thing
                 (not bit-identical: the pipeline resizes with INTER_AREA when shrinking).
                 ``--repeat N`` alternates the two N times and keeps the fastest run of each.
    ``engines``  The extractor's model step alone, snippets/s, per engine on the same decoded
                 centre-crop views of the extract video (batch ``--batch-size``, default 4): PyTorch
                 (the optimised eager model), OpenVINO fp32 and OpenVINO int8 (NNCF, calibrated on
                 ``--calibration-snippets`` snippets from the video's first half). Reported: ratios
                 against PyTorch, OpenVINO fp32's max |difference| from PyTorch's features, and the
                 int8 features' cosine to fp32 on the held-out second half.
    ``e2e``      End-to-end real-time factor (video seconds per wall second) of
                 ``vad score VIDEO --no-cache --crop center`` on the e2e video, once with
                 ``--executor local`` and once with ``--executor ray``. Reported: the job's own
                 ``realtime_factor`` (``video_s / wall_s``, Ray startup included), the RTF over
                 the pipeline only (``video_s / stages_s.pipeline_wall_s``, no Ray startup), the
                 steady-state RTF after the stream's start-up (``stages_s.first_chunk_s``), and
                 the command's wall time; ratio ray / local. With ``--e2e-int8`` also a local run
                 with ``--precision int8`` (calibrated on the video itself).
    ``memory``   Peak resident memory of ``vad score --executor local --no-cache`` on the short
                 and on the long video, each in its own process: GNU ``/usr/bin/time -v``
                 "Maximum resident set size" (the largest single process) when available, else
                 ``ru_maxrss`` of an intermediate child, plus the sampled sum of RSS over the
                 process tree (every 0.2 s). Ratio long / short; the target is <= 1.3 (memory
                 bounded by the pipeline's queues, not by the video's length).

Examples::

    .venv/bin/python scripts/bench_score.py --json runs/bench_score.json
    .venv/bin/python scripts/bench_score.py --quick --skip-long --sections decode,extract
    .venv/bin/python scripts/bench_score.py --device cuda --sections extract,e2e
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file from anywhere: make `vad` / `pipelines` importable
    sys.path.insert(0, str(REPO))

SECTIONS = ("decode", "extract", "engines", "e2e", "memory")
BACKENDS = ("decord", "pyav", "opencv")
SNIPPET = 16
SHORT_SIDE = 256
CROP = 224
QUICK = {"short_minutes": 0.25, "long_minutes": 1.0, "e2e_seconds": 20.0, "extract_snippets": 16}
DEFAULTS = {"short_minutes": 1.0, "long_minutes": 10.0, "e2e_seconds": 60.0, "extract_snippets": 48}
MEMORY_TARGET = 1.3


def log(msg: str) -> None:
    """Progress to stderr; the result tables go to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- test videos


@dataclass(frozen=True)
class VideoSpec:
    """Encoding parameters of the synthetic (or re-encoded) test videos."""

    width: int
    height: int
    fps: float
    crf: int
    gop: int
    seed: int

    def tag(self) -> str:
        return f"{self.width}x{self.height}_{self.fps:g}fps_crf{self.crf}_g{self.gop}"


class SyntheticScene:
    """Deterministic frames: a panning texture, bouncing rectangles, one noise patch."""

    def __init__(self, width: int, height: int, seed: int) -> None:
        import cv2

        rng = np.random.default_rng(seed)
        self.width, self.height, self.seed = width, height, seed
        noise = rng.normal(0, 1, (height, width * 2, 3)).astype(np.float32)
        noise[..., 1:] = 0.6 * noise[..., :1] + 0.4 * noise[..., 1:]  # mostly luminance, some colour
        texture = cv2.GaussianBlur(noise, (0, 0), 2.0)
        texture = 128.0 + 45.0 * texture / texture.std()
        ys, xs = np.mgrid[0:height, 0:width * 2]
        stripes = 25.0 * np.sin(xs / 23.0 + ys / 41.0)[..., None]
        self.background = np.clip(texture + stripes, 0, 255).astype(np.uint8)
        n = 4
        self.sizes = rng.integers(30, 90, (n, 2))
        self.pos0 = rng.uniform(0, 1, (n, 2)) * (np.array([width, height]) - self.sizes)
        self.vel = rng.uniform(-4, 4, (n, 2))
        self.colors = rng.integers(0, 256, (n, 3))

    def frame(self, i: int) -> np.ndarray:
        shift = (i // 2) % self.width
        img = self.background[:, shift:shift + self.width].copy()
        for (w, h), p0, v, c in zip(self.sizes, self.pos0, self.vel, self.colors):
            x = _bounce(p0[0] + v[0] * i, self.width - w)
            y = _bounce(p0[1] + v[1] * i, self.height - h)
            img[y:y + h, x:x + w] = c
        rng = np.random.default_rng((self.seed, i))
        ph, pw = self.height // 6, self.width // 6  # sensor-like noise in one corner
        patch = img[-ph:, -pw:].astype(np.int16) + rng.integers(-20, 21, (ph, pw, 1), dtype=np.int16)
        img[-ph:, -pw:] = np.clip(patch, 0, 255).astype(np.uint8)
        return img


def _bounce(p: float, span: int) -> int:
    """Position bouncing between 0 and ``span``."""
    period = 2 * max(span, 1)
    q = p % period
    return int(q if q <= span else period - q)


def _open_encoder(path: Path, spec: VideoSpec, width: int, height: int) -> tuple[Any, Any]:
    import av

    container = av.open(str(path), "w", format="mp4")
    stream = container.add_stream("libx264", rate=Fraction(spec.fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"crf": str(spec.crf), "g": str(spec.gop), "keyint_min": str(spec.gop)}
    stream.codec_context.gop_size = spec.gop
    return container, stream


def _encode(path: Path, spec: VideoSpec, width: int, height: int, frames: Any) -> int:
    """Encode an iterable of RGB uint8 frames into ``path``; returns the number written."""
    import av

    container, stream = _open_encoder(path, spec, width, height)
    n = 0
    try:
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
            n += 1
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return n


def _atomic_video(dst: Path, write: Callable[[Path], int], n_expected: int) -> Path:
    """Write through a temp name and check the frame count before publishing ``dst``."""
    from vad.io import probe_video

    tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.tmp.mp4")
    try:
        written = write(tmp)
        n = probe_video(tmp).n_frames
        if n != written or n != n_expected:
            raise RuntimeError(f"{dst.name}: wrote {written} frames, file holds {n}, wanted {n_expected}")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def synthetic_video(work: Path, spec: VideoSpec, n_frames: int) -> Path:
    """The cached synthetic video of ``n_frames`` frames (generated on first use)."""
    dst = work / "videos" / f"synth_{spec.tag()}_s{spec.seed}_{n_frames}f.mp4"
    if dst.is_file():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    log(f"generating {dst.name} ({n_frames / spec.fps:.0f} s)")
    scene = SyntheticScene(spec.width, spec.height, spec.seed)
    t0 = time.perf_counter()
    _atomic_video(dst, lambda p: _encode(p, spec, spec.width, spec.height,
                                         (scene.frame(i) for i in range(n_frames))), n_frames)
    log(f"  done in {time.perf_counter() - t0:.1f} s")
    return dst


def _file_digest(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:10]


def _decoded_frames(src: Path, n_frames: int) -> Any:
    import av

    with av.open(str(src)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= n_frames:
                return
            yield frame.to_ndarray(format="rgb24")


def cut_video(work: Path, src: Path, spec: VideoSpec, n_frames: int) -> Path:
    """The first ``n_frames`` frames of ``src`` re-encoded (cached); ``src`` itself if shorter."""
    from vad.io import probe_video

    info = probe_video(src)
    if n_frames >= info.n_frames:
        return src
    dst = work / "videos" / f"cut_{src.stem}_{_file_digest(src)}_crf{spec.crf}_g{spec.gop}_{n_frames}f.mp4"
    if dst.is_file():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    log(f"cutting {src.name} to {n_frames} frames -> {dst.name}")
    cut_spec = VideoSpec(info.width, info.height, info.fps, spec.crf, spec.gop, spec.seed)
    return _atomic_video(dst, lambda p: _encode(p, cut_spec, info.width, info.height,
                                                _decoded_frames(src, n_frames)), n_frames)


class Videos:
    """Hands out test videos of a given length: synthetic, or cut from ``--video``."""

    def __init__(self, work: Path, spec: VideoSpec, source: Path | None) -> None:
        self.work, self.spec, self.source = work, spec, source

    def frames_for_seconds(self, seconds: float) -> int:
        fps = self.spec.fps
        if self.source is not None:
            from vad.io import probe_video

            fps = probe_video(self.source).fps
        return max(SNIPPET, round(seconds * fps))

    def get(self, n_frames: int) -> Path:
        if self.source is None:
            return synthetic_video(self.work, self.spec, n_frames)
        return cut_video(self.work, self.source, self.spec, n_frames)


def video_facts(path: Path) -> dict[str, Any]:
    from vad.io import probe_video

    i = probe_video(path)
    return {"path": str(path), "n_frames": i.n_frames, "fps": i.fps, "width": i.width, "height": i.height,
            "duration_s": round(i.n_frames / i.fps, 3), "codec": i.codec, "bytes": path.stat().st_size}


# --------------------------------------------------------------------------- subprocesses


def vad_command() -> list[str]:
    """The `vad` console script next to this interpreter, else ``python -m pipelines.cli``."""
    script = Path(sys.executable).parent / "vad"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pipelines.cli"]


def child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def one_video_summary(res: dict[str, Any], out_dir: Path) -> dict[str, Any] | None:
    """The run's summary.json if its one video succeeded; else None with ``res["error"]`` set."""
    summary = read_summary(out_dir)
    if summary is None or summary.get("n_ok") != 1:
        res["error"] = (f"no summary.json (exit status {res['rc']})" if summary is None
                        else f"video failed: {summary.get('failed')}")
        return None
    return summary


def run_logged(cmd: list[str], log_path: Path, timeout: float) -> dict[str, Any]:
    """Run ``cmd``; output to ``log_path``; returns rc, wall seconds and the output's tail."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env(), cwd=str(REPO),
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    wall = time.perf_counter() - t0
    tail = log_path.read_text(errors="replace")[-2000:]
    if rc != 0:
        log(f"  exit status {rc}; see {log_path}")
    return {"cmd": cmd, "rc": rc, "command_wall_s": round(wall, 3), "log": str(log_path), "output_tail": tail}


def read_summary(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def fresh_dir(path: Path) -> Path:
    """An empty directory at ``path`` (a previous benchmark's output is removed)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def tuning_flags(args: argparse.Namespace) -> list[str]:
    """Flags passed through to every `vad` command: device, workers, threads, batch size, engine."""
    out = ["--device", args.device]
    for flag, value in (("--workers", args.workers), ("--threads", args.threads), ("--batch-size", args.batch_size)):
        if value is not None:
            out += [flag, str(value)]
    if args.engine:
        out += ["--set", f"features.engine={args.engine}"]
    return out


# --------------------------------------------------------------------------- decode


def decode_all(path: Path, backend: str, short_side: int | None) -> dict[str, Any]:
    """Read every frame in consecutive ranges of 16; frames/s including opening the file."""
    from vad.io import open_video

    t0 = time.perf_counter()
    with open_video(path, backend, short_side=short_side) as reader:
        n = reader.info.n_frames
        shape: tuple[int, ...] = ()
        for start in range(0, n, SNIPPET):
            shape = reader.read(start, min(start + SNIPPET, n)).shape
    seconds = time.perf_counter() - t0
    return {"frames": n, "seconds": round(seconds, 3), "frames_per_s": round(n / seconds, 1),
            "frame_size": f"{shape[2]}x{shape[1]}" if shape else None}


def bench_decode(path: Path) -> dict[str, Any]:
    rows = []
    for backend in BACKENDS:
        for short_side in (SHORT_SIDE, None):
            row: dict[str, Any] = {"backend": backend, "short_side": short_side}
            log(f"decode {backend} short_side={short_side}")
            try:
                row.update(decode_all(path, backend, short_side))
            except Exception as err:  # noqa: BLE001 - a backend that fails is reported, not fatal
                row["error"] = f"{type(err).__name__}: {err}"
            rows.append(row)
    return {"video": video_facts(path), "rows": rows}


# --------------------------------------------------------------------------- extract


def naive_crop(frame_bgr: np.ndarray) -> np.ndarray:
    """BGR frame -> RGB, short side 256 (INTER_LINEAR), centre 224x224 crop."""
    import cv2

    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    size = (int(SHORT_SIDE * w / h), SHORT_SIDE) if w >= h else (SHORT_SIDE, int(SHORT_SIDE * h / w))
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
    top, left = (size[1] - CROP) // 2, (size[0] - CROP) // 2
    return rgb[top:top + CROP, left:left + CROP]


def naive_extract(path: Path, n_snippets: int, device: str) -> dict[str, Any]:
    """The baseline: OpenCV decode + per-snippet batch-1 fp32 forward, nothing overlapped."""
    import cv2
    import torch

    from vad.features.i3d import preprocess_frames
    from vad.features.i3d_weights import find_default_i3d_weights, load_i3d

    if device == "auto":  # as `vad --device auto` resolves it
        device = "cuda" if torch.cuda.is_available() else "cpu"
    weights = find_default_i3d_weights()
    if weights is None:
        raise FileNotFoundError("no I3D weights (vad assets fetch)")
    t0 = time.perf_counter()
    model = load_i3d(weights, device)
    load_s = time.perf_counter() - t0
    feats, decode_s, forward_s = [], 0.0, 0.0
    cap = cv2.VideoCapture(str(path))
    t_start = time.perf_counter()
    try:
        while len(feats) < n_snippets:
            t = time.perf_counter()
            frames = []
            while len(frames) < SNIPPET:
                ok, bgr = cap.read()
                if not ok:
                    break
                frames.append(naive_crop(bgr))
            decode_s += time.perf_counter() - t
            if len(frames) < SNIPPET:
                break
            t = time.perf_counter()
            with torch.no_grad():
                x = preprocess_frames(np.stack(frames)).to(device)
                feats.append(model(x[None]).features.cpu().numpy()[0])
            forward_s += time.perf_counter() - t
    finally:
        cap.release()
    wall = time.perf_counter() - t_start
    del model
    gc.collect()
    n = len(feats)
    return {"n_snippets": n, "load_s": round(load_s, 3), "wall_s": round(wall, 3), "decode_s": round(decode_s, 3),
            "forward_s": round(forward_s, 3), "snippets_per_s": round(n / wall, 3) if wall > 0 else None,
            "torch_threads": torch.get_num_threads(), "_features": np.stack(feats) if feats else None}


def pipeline_extract(path: Path, n_snippets: int, args: argparse.Namespace) -> dict[str, Any]:
    """`vad extract` (local executor) into a fresh cache; snippets/s over the pipeline stage."""
    base = args.work / "runs" / "extract"
    out_dir, cache_dir = fresh_dir(base / "out"), fresh_dir(base / "cache")
    cmd = [*vad_command(), "extract", str(path), "--executor", "local", "--crop", "center",
           "--out", str(out_dir), "--cache", str(cache_dir), "--no-progress",
           "--set", "pipeline.resume=false", *tuning_flags(args)]
    res = run_logged(cmd, base / "extract.log", args.timeout)
    summary = one_video_summary(res, out_dir)
    if summary is None:
        return res
    stages = summary.get("stages_s", {})
    pwall = stages.get("pipeline_wall_s")
    res.update({"n_snippets": n_snippets, "n_ok": summary.get("n_ok"), "stages_s": stages,
                "summary_wall_s": summary.get("wall_s"), "realtime_factor": summary.get("realtime_factor"),
                "snippets_per_s": round(n_snippets / pwall, 3) if pwall else None,
                "snippets_per_s_command": round(n_snippets / res["command_wall_s"], 3),
                "_features": load_cached_features(cache_dir)})
    return res


def load_cached_features(cache_dir: Path) -> np.ndarray | None:
    """Crop-0 features the pipeline wrote (``<root>/<extractor>/<video_id>__0.npy``)."""
    found = sorted(cache_dir.rglob("*__0.npy"))
    return np.load(found[0]) if len(found) == 1 else None


def feature_agreement(a: np.ndarray | None, b: np.ndarray | None) -> dict[str, Any] | None:
    """Per-snippet cosine similarity of two (n, 1024) feature arrays."""
    if a is None or b is None:
        return None
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    if a.shape != b.shape:
        return {"error": f"shapes differ: naive {a.shape}, pipeline {b.shape}"}
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {"cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5)}


def bench_extract(videos: Videos, args: argparse.Namespace) -> dict[str, Any]:
    n = args.extract_snippets
    path = videos.get(SNIPPET * n)
    facts = video_facts(path)
    n = min(n, facts["n_frames"] // SNIPPET)
    naives, pipes = [], []
    for rep in range(args.repeat):  # alternate, so a burst of outside load hits both alike
        log(f"extract {rep + 1}/{args.repeat}: naive baseline, {n} snippets on {args.device}")
        try:
            naives.append(naive_extract(path, n, args.device))
        except Exception as err:  # noqa: BLE001
            naives.append({"error": f"{type(err).__name__}: {err}"})
        log(f"extract {rep + 1}/{args.repeat}: pipeline (vad extract)")
        pipes.append(pipeline_extract(path, n, args))
    naive, pipe = _best(naives), _best(pipes)
    agree = feature_agreement(naive.pop("_features", None), pipe.pop("_features", None))
    for run in naives + pipes:
        run.pop("_features", None)
    ratio = _ratio(pipe.get("snippets_per_s"), naive.get("snippets_per_s"))
    return {"video": facts, "n_snippets": n, "naive": naive, "pipeline": pipe, "speedup": ratio,
            "feature_agreement": agree, "repeat": args.repeat,
            "naive_all_snippets_per_s": [r.get("snippets_per_s") for r in naives],
            "pipeline_all_snippets_per_s": [r.get("snippets_per_s") for r in pipes]}


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated runs (least disturbed by other load); the first if none worked."""
    ok = [r for r in runs if r.get("snippets_per_s")]
    return max(ok, key=lambda r: r["snippets_per_s"]) if ok else runs[0]


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


# --------------------------------------------------------------------------- engines


def _views(path: Path, n_snippets: int) -> np.ndarray:
    """Centre-crop views of the first snippets, as the pipeline makes them: (n, 16, 224, 224, 3)."""
    from vad.clips import SnippetSpec, iter_snippets
    from vad.config import FeatureConfig
    from vad.features.views import snippet_views
    from vad.io import open_video

    with open_video(path, short_side=256) as reader:
        out = [snippet_views(sn.frames, FeatureConfig())[0] for sn in iter_snippets(reader, SnippetSpec(), stop_snippet=n_snippets)]
    return np.stack(out)


def _timed_features(engine: Callable[[np.ndarray], np.ndarray], views: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    engine(views[:batch])  # warm-up (first inference allocates)
    t0 = time.perf_counter()
    feats = np.concatenate([engine(views[a:a + batch]) for a in range(0, len(views), batch)])
    return feats, time.perf_counter() - t0


def bench_engines(videos: Videos, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from vad.features.engines import OpenVINOEngine, TorchI3DEngine, openvino_i3d_model
    from vad.features.i3d import optimize_for_inference
    from vad.features.i3d_weights import find_default_i3d_weights, load_i3d
    from vad.utils import sha256_file

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    n = args.extract_snippets
    path = videos.get(SNIPPET * n)
    views = _views(path, n)
    n = len(views)
    batch = args.batch_size or 4
    weights = find_default_i3d_weights()
    digest = sha256_file(weights)

    def load() -> Any:
        return optimize_for_inference(load_i3d(weights))

    half = n // 2
    calib_n = min(args.calibration_snippets, half)
    calib = [views[a:a + batch] for a in range(0, calib_n - batch + 1, batch)]
    engine_dir = args.work / "engines"
    results: dict[str, Any] = {"video": video_facts(path), "n_snippets": n, "batch": batch, "threads": threads,
                               "calibration_snippets": len(calib) * batch, "held_out_snippets": n - half}
    log(f"engines: torch on {n} snippets")
    torch_feats, t_torch = _timed_features(TorchI3DEngine(load()), views, batch)
    results["torch"] = {"snippets_per_s": round(n / t_torch, 3), "wall_s": round(t_torch, 3)}
    for precision in ("fp32", "int8"):
        log(f"engines: openvino {precision} (convert/quantise once, cached in {engine_dir})")
        t0 = time.perf_counter()
        xml = openvino_i3d_model(load, engine_dir, weights_sha256=digest, batch=batch,
                                 clip_shape=views.shape[1:], precision=precision,
                                 calibration=(lambda: calib) if precision == "int8" else None,
                                 calibration_id=f"bench-{path.name}-{len(calib)}x{batch}" if precision == "int8" else None)
        prep_s = time.perf_counter() - t0
        feats, t = _timed_features(OpenVINOEngine(xml, threads=threads, precision=precision), views, batch)
        entry: dict[str, Any] = {"snippets_per_s": round(n / t, 3), "wall_s": round(t, 3),
                                 "prepare_s": round(prep_s, 1), "over_torch": _ratio(n / t, n / t_torch)}
        if precision == "fp32":
            entry["max_abs_diff_vs_torch"] = float(np.abs(feats - torch_feats).max())
            fp32_feats = feats
        else:
            a, b = fp32_feats[half:], feats[half:]
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
            entry.update(cosine_min=round(float(cos.min()), 5), cosine_mean=round(float(cos.mean()), 5),
                         max_abs_diff_vs_fp32=round(float(np.abs(a - b).max()), 4))
        results[f"openvino_{precision}"] = entry
    return results


def report_engines(r: dict[str, Any]) -> list[str]:
    t, f, q = r["torch"], r["openvino_fp32"], r["openvino_int8"]
    return [f"I3D model step by engine (snippets/s), {r['n_snippets']} centre-crop snippets, batch {r['batch']}, "
            f"{r['threads']} threads",
            f"  torch (optimised eager) : {_f(t['snippets_per_s'], '.2f')}",
            f"  openvino fp32           : {_f(f['snippets_per_s'], '.2f')}  ({_f(f['over_torch'], '.2f')}x torch; "
            f"max |diff| vs torch {f['max_abs_diff_vs_torch']:.1e}; convert {_f(f['prepare_s'])} s, once)",
            f"  openvino int8           : {_f(q['snippets_per_s'], '.2f')}  ({_f(q['over_torch'], '.2f')}x torch; "
            f"cosine to fp32 on {r['held_out_snippets']} held-out snippets min {q['cosine_min']:.4f} mean "
            f"{q['cosine_mean']:.4f}; calibrated on {r['calibration_snippets']}; quantise {_f(q['prepare_s'])} s, once)"]


# --------------------------------------------------------------------------- e2e


def score_command(path: Path, out_dir: Path, executor: str, args: argparse.Namespace,
                  extra: list[str] | None = None) -> list[str]:
    return [*vad_command(), "score", str(path), "--out", str(out_dir), "--no-cache", "--no-progress",
            "--executor", executor, "--crop", "center", "--set", "pipeline.resume=false", *tuning_flags(args),
            *(extra or [])]


def score_run(path: Path, executor: str, args: argparse.Namespace, extra: list[str] | None = None) -> dict[str, Any]:
    base = args.work / "runs" / f"e2e_{executor}{'_' + '_'.join(x.strip('-') for x in extra) if extra else ''}"
    out_dir = fresh_dir(base / "out")
    res = run_logged(score_command(path, out_dir, executor, args, extra), base / "score.log", args.timeout)
    summary = one_video_summary(res, out_dir)
    if summary is None:
        return res
    stages = summary.get("stages_s", {})
    video_s, pwall = summary.get("video_s"), stages.get("pipeline_wall_s")
    res["steady_rtf"] = steady_state_rtf(summary, out_dir)
    res.update({"n_ok": summary.get("n_ok"), "n_failed": summary.get("n_failed"), "video_s": video_s,
                "wall_s": summary.get("wall_s"), "realtime_factor": summary.get("realtime_factor"),
                "pipeline_rtf": round(video_s / pwall, 3) if video_s and pwall else None,
                "command_rtf": round(video_s / res["command_wall_s"], 3) if video_s else None,
                "stages_s": stages, "executor_reported": summary.get("executor")})
    return res


def steady_state_rtf(summary: dict[str, Any], out_dir: Path) -> float | None:
    """RTF after the stream's start-up (worker processes, model load, first decode): the video
    time of every chunk but the first over the wall time after the first chunk arrived. This
    is what a long archive sees; the job RTF also pays the start-up once."""
    import yaml

    stages = summary.get("stages_s", {})
    pwall, first = stages.get("pipeline_wall_s"), stages.get("first_chunk_s")
    videos = summary.get("videos") or []
    if not (pwall and first is not None and videos and videos[0].get("n_snippets")):
        return None
    chunk = yaml.safe_load((out_dir / "config.yaml").read_text())["pipeline"]["chunk_snippets"]
    n = videos[0]["n_snippets"]
    rest_s = summary["video_s"] * max(n - chunk, 0) / n
    return round(rest_s / (pwall - first), 3) if pwall > first else None


def bench_e2e(videos: Videos, args: argparse.Namespace) -> dict[str, Any]:
    path = videos.get(videos.frames_for_seconds(args.e2e_seconds))
    runs = {ex: score_run(path, ex, args) for ex in ("local", "ray")}
    if args.e2e_int8:
        runs["local-int8"] = score_run(path, "local", args, extra=["--precision", "int8"])
    return {"video": video_facts(path), "runs": runs,
            "ray_over_local": _ratio(runs["ray"].get("realtime_factor"), runs["local"].get("realtime_factor")),
            "ray_over_local_pipeline": _ratio(runs["ray"].get("pipeline_rtf"), runs["local"].get("pipeline_rtf")),
            "ray_over_local_steady": _ratio(runs["ray"].get("steady_rtf"), runs["local"].get("steady_rtf"))}


# --------------------------------------------------------------------------- memory


def _ppid_map() -> dict[int, int]:
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
                out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return out


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_rss_kb(root: int) -> int:
    """Sum of RSS over ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppid_map().items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss_kb(pid)
        stack.extend(children.get(pid, []))
    return total


class TreeSampler(threading.Thread):
    """Samples the process tree's summed RSS every ``interval`` s; keeps the peak and, once a
    second, a ``(seconds, kB)`` timeline (shows whether memory plateaus or grows with length)."""

    def __init__(self, pid: int, interval: float = 0.2, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.every, self.peak_kb = pid, interval, every, 0
        self.timeline: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self.done.is_set():
            kb, t = tree_rss_kb(self.pid), time.perf_counter() - t0
            self.peak_kb = max(self.peak_kb, kb)
            if not self.timeline or t - self.timeline[-1][0] >= self.every:
                self.timeline.append((round(t, 1), kb))
            self.done.wait(self.interval)


_RUSAGE_CHILD = """import json, resource, subprocess, sys
rc = subprocess.run(sys.argv[2:]).returncode
json.dump({"rc": rc, "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, open(sys.argv[1], "w"))
sys.exit(rc)
"""


def measure_peak(cmd: list[str], log_path: Path, timeout: float) -> dict[str, Any]:
    """Run ``cmd`` under GNU time (or an ru_maxrss wrapper) and a tree RSS sampler."""
    report = log_path.with_suffix(".rss")
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    if gnu_time:
        wrapped, method = [gnu_time, "-v", "-o", str(report), *cmd], "GNU time -v (largest process)"
    else:
        wrapped, method = [sys.executable, "-c", _RUSAGE_CHILD, str(report), *cmd], "ru_maxrss (largest process)"
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(wrapped, stdout=fh, stderr=subprocess.STDOUT, env=child_env(), cwd=str(REPO))
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        sampler.done.set()
        sampler.join()
    res = {"cmd": cmd, "rc": rc, "command_wall_s": round(time.perf_counter() - t0, 3), "log": str(log_path),
           "method": method, "maxrss_kb": _read_maxrss(report, bool(gnu_time)), "tree_peak_kb": sampler.peak_kb,
           "tree_rss_timeline_kb": sampler.timeline}
    if rc != 0:
        res["output_tail"] = log_path.read_text(errors="replace")[-2000:]
        log(f"  exit status {rc}; see {log_path}")
    return res


def _read_maxrss(report: Path, gnu: bool) -> int | None:
    try:
        text = report.read_text()
    except OSError:
        return None
    if not gnu:
        return json.loads(text).get("maxrss_kb")
    for line in text.splitlines():
        if "Maximum resident set size" in line:
            return int(line.rsplit(":", 1)[1])
    return None


def memory_run(path: Path, label: str, args: argparse.Namespace) -> dict[str, Any]:
    base = args.work / "runs" / f"memory_{label}"
    out_dir = fresh_dir(base / "out")
    cmd = score_command(path, out_dir, "local", args)
    res = measure_peak(cmd, base / "score.log", args.timeout)
    summary = read_summary(out_dir) or {}
    res.update({"video_s": summary.get("video_s"), "realtime_factor": summary.get("realtime_factor"),
                "n_ok": summary.get("n_ok")})
    return res


def bench_memory(videos: Videos, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"target_ratio": MEMORY_TARGET}
    lengths = {"short": args.short_minutes} if args.skip_long else {"short": args.short_minutes,
                                                                     "long": args.long_minutes}
    for label, minutes in lengths.items():
        path = videos.get(videos.frames_for_seconds(minutes * 60))
        out[label] = {"video": video_facts(path), **memory_run(path, label, args)}
    if "long" in out:
        s, lng = out["short"], out["long"]
        out["ratio_maxrss"] = _ratio(lng.get("maxrss_kb"), s.get("maxrss_kb"))
        out["ratio_tree"] = _ratio(lng.get("tree_peak_kb"), s.get("tree_peak_kb"))
    return out


# --------------------------------------------------------------------------- machine / report


def machine() -> dict[str, Any]:
    import torch

    cpu = "unknown"
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"processor": platform.processor(), "cpu_model": cpu, "cpu_count": os.cpu_count(), "usable_cpus": usable,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "platform": platform.platform()}


def load_now() -> dict[str, Any]:
    """Load average (and CPU pressure where the kernel reports it): other work skews timings."""
    out: dict[str, Any] = {"loadavg": list(os.getloadavg())}
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
        out["cpu_pressure_avg10"] = float(some[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        pass
    return out


def _f(x: Any, fmt: str = ".1f", none: str = "-") -> str:
    return none if x is None else format(x, fmt)


def _mb(kb: int | None) -> str:
    return "-" if not kb else f"{kb / 1024:.0f}"


def report_decode(r: dict[str, Any]) -> list[str]:
    v = r["video"]
    lines = [f"Decode-only throughput (frames/s), {v['n_frames']} frames {v['width']}x{v['height']} "
             f"@ {v['fps']:g} fps, ranges of {SNIPPET}",
             f"  {'backend':<8}{'short 256':>12}{'native':>12}  {'out size':<10}"]
    for backend in BACKENDS:
        rows = {row["short_side"]: row for row in r["rows"] if row["backend"] == backend}
        cells = [rows[s].get("frames_per_s") if "error" not in rows[s] else "error" for s in (SHORT_SIDE, None)]
        cells_s = [c if isinstance(c, str) else _f(c) for c in cells]
        lines.append(f"  {backend:<8}{cells_s[0]:>12}{cells_s[1]:>12}  {rows[SHORT_SIDE].get('frame_size') or ''}")
        lines += [f"    {backend} short_side={s}: {row['error']}" for s, row in rows.items() if "error" in row]
    return lines


def report_extract(r: dict[str, Any]) -> list[str]:
    n, p = r["naive"], r["pipeline"]
    lines = [f"I3D extraction (snippets/s), {r['n_snippets']} snippets of {SNIPPET} frames, centre crop",
             f"  naive    : {_f(n.get('snippets_per_s'), '.2f')} snippets/s "
             f"(wall {_f(n.get('wall_s'), '.1f')} s = decode {_f(n.get('decode_s'), '.1f')} + forward "
             f"{_f(n.get('forward_s'), '.1f')}; model load {_f(n.get('load_s'), '.1f')} s excluded; "
             f"{n.get('torch_threads', '-')} torch threads)"]
    if "error" in n:
        lines.append(f"    naive failed: {n['error']}")
    st = p.get("stages_s", {})
    lines.append(f"  pipeline : {_f(p.get('snippets_per_s'), '.2f')} snippets/s over pipeline_wall_s "
                 f"{_f(st.get('pipeline_wall_s'), '.1f')} s (decode_s {_f(st.get('decode_s'), '.1f')}, "
                 f"extract_s {_f(st.get('extract_s'), '.1f')}); whole command {_f(p.get('command_wall_s'), '.1f')} s "
                 f"= {_f(p.get('snippets_per_s_command'), '.2f')} snippets/s")
    if "error" in p:
        lines.append(f"    pipeline failed: {p['error']}")
    lines.append(f"  pipeline / naive: {_f(r['speedup'], '.2f')}x")
    if r.get("repeat", 1) > 1:
        lines.append(f"  best of {r['repeat']}; all runs: naive {r['naive_all_snippets_per_s']}, "
                     f"pipeline {r['pipeline_all_snippets_per_s']} snippets/s")
    agree = r.get("feature_agreement")
    if agree:
        lines.append("  features naive vs pipeline: " + (agree.get("error") or
                     f"cosine mean {agree['cosine_mean']:.4f}, min {agree['cosine_min']:.4f}"))
    return lines


def report_e2e(r: dict[str, Any]) -> list[str]:
    v = r["video"]
    lines = [f"End-to-end `vad score` real-time factor (video s / wall s), {v['duration_s']:.0f} s video "
             f"{v['width']}x{v['height']} @ {v['fps']:g} fps, I3D centre crop, no cache",
             f"  {'executor':<9}{'RTF':>8}{'RTF pipeline':>14}{'RTF steady':>12}{'RTF command':>13}{'wall s':>9}"
             f"{'pipeline s':>12}{'command s':>11}"]
    for ex, run in r["runs"].items():
        st = run.get("stages_s", {})
        lines.append(f"  {ex:<9}{_f(run.get('realtime_factor'), '.2f'):>8}{_f(run.get('pipeline_rtf'), '.2f'):>14}"
                     f"{_f(run.get('steady_rtf'), '.2f'):>12}{_f(run.get('command_rtf'), '.2f'):>13}{_f(run.get('wall_s')):>9}"
                     f"{_f(st.get('pipeline_wall_s')):>12}{_f(run.get('command_wall_s')):>11}")
        if "error" in run:
            lines.append(f"    {ex} failed: {run['error']}")
    lines.append(f"  ray / local: {_f(r['ray_over_local'], '.2f')}x (job RTF), "
                 f"{_f(r['ray_over_local_pipeline'], '.2f')}x (pipeline only), "
                 f"{_f(r.get('ray_over_local_steady'), '.2f')}x (steady state, after start-up)")
    return lines


def report_memory(r: dict[str, Any]) -> list[str]:
    lines = ["Peak memory of `vad score --executor local --no-cache` (MB)",
             f"  {'video':<7}{'length s':>10}{'max RSS':>10}{'tree peak':>11}{'RTF':>7}  method"]
    for label in ("short", "long"):
        if label in r:
            m = r[label]
            lines.append(f"  {label:<7}{m['video']['duration_s']:>10.0f}{_mb(m.get('maxrss_kb')):>10}"
                         f"{_mb(m.get('tree_peak_kb')):>11}{_f(m.get('realtime_factor'), '.2f'):>7}  {m['method']}")
            if m.get("rc"):
                lines.append(f"    {label} exit status {m['rc']}; see {m['log']}")
    if "long" in r:
        ok = r["ratio_maxrss"] is not None and r["ratio_maxrss"] <= MEMORY_TARGET
        lines.append(f"  long / short: {_f(r['ratio_maxrss'], '.2f')}x max RSS, {_f(r['ratio_tree'], '.2f')}x tree "
                     f"(target <= {MEMORY_TARGET}: {'met' if ok else 'NOT met'})")
    else:
        lines.append("  (long video skipped: --skip-long)")
    return lines


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"machine: {m['cpu_model']}, {m['usable_cpus']}/{m['cpu_count']} CPUs, torch {m['torch']} "
             f"({m['torch_threads']} threads), GPU {m['gpu'] or 'none'}, device {results['settings']['device']}",
             f"load avg at start {results['load_start']['loadavg']}, at end {results['load_end']['loadavg']}"]
    printers = {"decode": report_decode, "extract": report_extract, "engines": report_engines, "e2e": report_e2e,
                "memory": report_memory}
    for name in SECTIONS:
        if name in results["sections"]:
            section = results["sections"][name]
            lines.append("")
            lines += ([f"{name}: FAILED {section['error']}"] if "error" in section and len(section) == 1
                      else printers[name](section))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    ap.add_argument("--video", type=Path, help="benchmark this video (each length = its first N frames, "
                    "re-encoded) instead of the synthetic 640x360 ones")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vad_bench",
                    help="work dir: cached test videos and the runs' outputs (default: %(default)s)")
    ap.add_argument("--short-minutes", type=float, help=f"short video for the memory comparison "
                    f"(default {DEFAULTS['short_minutes']}, --quick {QUICK['short_minutes']})")
    ap.add_argument("--long-minutes", type=float, help=f"long video for the memory comparison "
                    f"(default {DEFAULTS['long_minutes']}, --quick {QUICK['long_minutes']})")
    ap.add_argument("--e2e-seconds", type=float, help=f"video length for the decode and end-to-end sections "
                    f"(default {DEFAULTS['e2e_seconds']:g}, --quick {QUICK['e2e_seconds']:g})")
    ap.add_argument("--extract-snippets", type=int, help=f"snippets for the extraction comparison "
                    f"(default {DEFAULTS['extract_snippets']}, --quick {QUICK['extract_snippets']})")
    ap.add_argument("--quick", action="store_true", help="short settings for a quick look: "
                    + ", ".join(f"{k.replace('_', '-')} {v:g}" for k, v in QUICK.items()))
    ap.add_argument("--skip-long", action="store_true", help="memory section: only the short video")
    ap.add_argument("--device", default="cpu", help="device for `vad` and the naive baseline: cpu, cuda, cuda:N")
    ap.add_argument("--workers", type=int, help="passed to `vad score/extract --workers`")
    ap.add_argument("--threads", type=int, help="passed to `vad score/extract --threads`")
    ap.add_argument("--batch-size", type=int, help="passed to `vad score/extract --batch-size`")
    ap.add_argument("--engine", choices=("auto", "torch", "openvino"), help="passed as features.engine (default: vad's auto)")
    ap.add_argument("--calibration-snippets", type=int, default=20, help="engines section: int8 calibration snippets")
    ap.add_argument("--e2e-int8", action="store_true", help="e2e section: also a local run with --precision int8")
    ap.add_argument("--width", type=int, default=640, help="synthetic video width (default 640)")
    ap.add_argument("--height", type=int, default=360, help="synthetic video height (default 360)")
    ap.add_argument("--fps", type=float, default=30.0, help="synthetic video frame rate (default 30)")
    ap.add_argument("--crf", type=int, default=23, help="x264 CRF of generated/cut videos (default 23)")
    ap.add_argument("--gop", type=int, default=60, help="x264 keyframe interval (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic scene")
    ap.add_argument("--repeat", type=int, default=1,
                    help="extract section: alternate naive and pipeline this many times, report the best of each")
    ap.add_argument("--timeout", type=float, default=7200.0, help="limit per `vad` command, seconds")
    ap.add_argument("--json", type=Path, help="also write every number here")
    args = ap.parse_args(argv)
    preset = QUICK if args.quick else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    if args.video is not None and not args.video.is_file():
        ap.error(f"--video {args.video}: no such file")
    if args.extract_snippets < 1 or args.repeat < 1 or args.e2e_seconds <= 0 or args.short_minutes <= 0 or args.long_minutes <= 0:
        ap.error("lengths and snippet counts must be positive")
    args.work = args.work.resolve()
    return args


def run_section(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    log(f"section {name}")
    t0, load_before = time.perf_counter(), load_now()
    try:
        out = fn()
    except Exception as err:  # noqa: BLE001 - one broken section must not lose the others
        log(f"section {name} failed: {type(err).__name__}: {err}")
        return {"error": f"{type(err).__name__}: {err}"}
    out.update({"section_s": round(time.perf_counter() - t0, 1), "load_before": load_before, "load_after": load_now()})
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    spec = VideoSpec(args.width, args.height, args.fps, args.crf, args.gop, args.seed)
    videos = Videos(args.work, spec, args.video.resolve() if args.video else None)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    results: dict[str, Any] = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv],
        "settings": settings, "machine": machine(), "vad_command": vad_command(), "load_start": load_now(),
        "sections": {}}
    jobs: dict[str, Callable[[], dict[str, Any]]] = {
        "decode": lambda: bench_decode(videos.get(videos.frames_for_seconds(args.e2e_seconds))),
        "extract": lambda: bench_extract(videos, args),
        "engines": lambda: bench_engines(videos, args),
        "e2e": lambda: bench_e2e(videos, args),
        "memory": lambda: bench_memory(videos, args),
    }
    for name in SECTIONS:
        if name in args.sections:
            results["sections"][name] = run_section(name, jobs[name])
    results["load_end"] = load_now()
    print(report(results), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"\njson: {args.json}")
    failed = any("error" in s and len(s) == 1 for s in results["sections"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
