"""``cameras.yaml``: the camera fleet of ``vad monitor --config cameras.yaml`` (the one owner
of that format; a ``--config`` file with a top-level ``cameras`` key is one). The example with every key is
``configs/monitor/cameras.example.yaml`` (also in the README).

Rules:

* **Strict.** Unknown keys, wrong types and bad values fail at start-up with one
  :class:`~vad.config.ConfigError` that names the file and the key (``cameras.yaml:
  cameras.gate.stream.stall_timeout_s must be positive``). ``defaults`` is checked on its own,
  so an error there names ``defaults``; a camera's mappings are merged over the defaults',
  its lists replace them.
* **Secrets.** ``${NAME}`` in a URL is replaced by the environment variable ``NAME``, else by
  ``NAME`` in ``secrets_file`` (a YAML mapping; a file others can read is warned about). A
  missing name is an error naming the camera, never the value. Resolved URLs live only in
  memory: logs, metrics, health and events carry the camera's name or :func:`redact_url`.
* A camera name is what files, topics and metrics use: letters, digits, ``-``, ``_``, ``.``.

:func:`load_fleet` returns a :class:`Fleet`: each enabled camera's :class:`CameraPlan` (its
URL, its own resolved :class:`~vad.config.ScoreConfig`, sink names, alert and retention rules)
and the sink definitions. :meth:`Fleet.build_sinks` makes the sinks; the monitor owns them.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from vad.config import (ConfigError, EventConfig, ScoreConfig, deep_merge, from_dict, kwargs_from_dict, read_yaml,
                        to_dict)
from vad.io.stream import StreamOptions
from vad.sinks import Sink
from vad.sinks.alerts import AlertRules

logger = logging.getLogger(__name__)

__all__ = ["CameraPlan", "Fleet", "RetentionRules", "SINK_TYPES", "load_fleet"]

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SECRET = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _sink_class(kind: str) -> type[Sink]:
    if kind == "webhook":
        from vad.sinks.webhook import WebhookSink

        return WebhookSink
    from vad.sinks.mqtt import MQTTSink  # imports paho only when built

    return MQTTSink


#: the alert sink types a fleet may name (``sinks.<name>.type``)
SINK_TYPES = ("webhook", "mqtt")


@dataclass
class ClipSettings:
    pre_s: float | None = None
    post_s: float | None = None


@dataclass
class RetentionSettings:
    max_age_days: float | None = None
    max_mb: float | None = None


@dataclass
class CameraSettings:
    """One camera's keys (``defaults`` has the same, less ``url``)."""

    url: str | None = None
    enabled: bool = True
    head: str | None = None
    reference: str | None = None
    analysis_fps: float | None = None
    threshold: float | None = None
    events: dict[str, Any] = field(default_factory=dict)
    stream: dict[str, Any] = field(default_factory=dict)
    clip: ClipSettings = field(default_factory=ClipSettings)
    sinks: list[str] | None = None
    alerts: dict[str, Any] = field(default_factory=dict)
    retention: RetentionSettings = field(default_factory=RetentionSettings)


@dataclass
class EventsLogSettings:
    max_mb: float | None = 100.0  # events.jsonl is rotated past this (null: never)
    keep: int = 5


@dataclass
class FleetFile:
    secrets_file: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    sinks: dict[str, Any] = field(default_factory=dict)
    events_log: EventsLogSettings = field(default_factory=EventsLogSettings)
    retention_check_s: float = 600.0
    cameras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetentionRules:
    """Per camera: clips and snapshots older than ``max_age_s`` or past ``max_bytes`` go."""

    max_age_s: float | None = None
    max_bytes: int | None = None

    @property
    def active(self) -> bool:
        return self.max_age_s is not None or self.max_bytes is not None


@dataclass
class CameraPlan:
    """What one camera runs with, fully resolved (``url`` may hold credentials: never logged)."""

    name: str
    url: str = field(repr=False)
    cfg: ScoreConfig = field(repr=False)
    sinks: tuple[str, ...] = ()
    alerts: AlertRules = field(default_factory=AlertRules)
    retention: RetentionRules = field(default_factory=RetentionRules)
    #: the camera's settings as written (secrets unresolved): what a reload compares
    written: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Fleet:
    path: Path
    cameras: dict[str, CameraPlan]
    sinks: dict[str, dict[str, Any]]  # name -> {"type": ..., constructor keys}
    events_log: EventsLogSettings
    retention_check_s: float
    disabled: list[str] = field(default_factory=list)

    def build_sinks(self, names: set[str] | None = None) -> dict[str, Sink]:
        """The named sinks (all when ``names`` is None), built now; a sink that cannot be built
        (bad URL, a password variable not set, paho missing) is a ConfigError naming it."""
        built: dict[str, Sink] = {}
        try:
            for name, spec in self.sinks.items():
                if names is not None and name not in names:
                    continue
                kwargs = {k: v for k, v in spec.items() if k != "type"}
                try:
                    built[name] = _sink_class(spec["type"])(**kwargs)
                except ValueError as err:
                    raise ConfigError(f"{self.path}: sinks.{name}: {err}") from None
        except ConfigError:
            for sink in built.values():
                sink.close()
            raise
        return built


def _check(fn: Any, key: str) -> Any:
    try:
        return fn()
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        text, leaf = str(err), key.rsplit(".", 1)[-1]
        # StreamOptions says "stream.x must ...": name the full key once
        raise ConfigError(key + text[len(leaf):] if text.startswith(leaf + ".") else f"{key}: {text}") from None


def _read_secrets(path: Path) -> dict[str, str]:
    raw = read_yaml(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("secrets file %s can be read by others (mode %o): chmod 600 it", path, mode & 0o777)
    bad = [k for k, v in raw.items() if not isinstance(v, (str, int, float))]
    if bad:
        raise ConfigError(f"{path}: secrets must be plain values, not {', '.join(map(str, bad))}")
    return {str(k): str(v) for k, v in raw.items()}


def _resolve_url(url: str, key: str, secrets: Mapping[str, str]) -> str:
    def lookup(m: re.Match[str]) -> str:
        name = m.group(1)
        value = os.environ.get(name, secrets.get(name))
        if value is None:
            raise ConfigError(f"{key}: ${{{name}}} is set neither in the environment nor in the secrets file")
        return value

    return _SECRET.sub(lookup, url)


def _camera_cfg(base: ScoreConfig, s: CameraSettings, key: str) -> ScoreConfig:
    """The camera's own ScoreConfig: ``base`` with the camera's keys applied (checked)."""
    cfg = copy.deepcopy(base)
    if s.head is not None:
        cfg.head.load = s.head
    if s.reference is not None:
        cfg.head.reference = s.reference
    events = dict(s.events)
    if s.threshold is not None:
        events["threshold"] = s.threshold
    if events:
        merged = deep_merge(to_dict(cfg.events), events)
        cfg.events = from_dict(EventConfig, merged, prefix=f"{key}.events")
    stream = deep_merge(dict(cfg.monitor.stream), s.stream)
    if s.analysis_fps is not None:
        stream["analysis_fps"] = s.analysis_fps
    _check(lambda: from_dict(StreamOptions, stream, prefix=f"{key}.stream"), f"{key}.stream")
    cfg.monitor.stream, cfg.monitor.cameras = stream, {}
    for name in ("pre_s", "post_s"):
        value = getattr(s.clip, name)
        if value is not None:
            if value < 0:
                raise ConfigError(f"{key}.clip.{name} must be >= 0, got {value}")
            setattr(cfg.monitor, name, value)
    return cfg


def _retention(s: RetentionSettings, key: str) -> RetentionRules:
    for name in ("max_age_days", "max_mb"):
        value = getattr(s, name)
        if value is not None and value <= 0:
            raise ConfigError(f"{key}.retention.{name} must be positive or null, got {value}")
    return RetentionRules(None if s.max_age_days is None else s.max_age_days * 86400.0,
                          None if s.max_mb is None else int(s.max_mb * 1024 * 1024))


def _resolve_settings(s: CameraSettings, key: str, base: ScoreConfig
                      ) -> tuple[ScoreConfig, AlertRules, RetentionRules]:
    alerts = _check(lambda: from_dict(AlertRules, s.alerts, prefix=f"{key}.alerts"), f"{key}.alerts")
    return _camera_cfg(base, s, key), alerts, _retention(s.retention, key)


def load_fleet(path: str | Path, base: ScoreConfig) -> Fleet:
    """Read and check ``cameras.yaml`` against the job's resolved config ``base``; every error
    is one ConfigError naming the file and the key."""
    path = Path(path)
    try:
        return _load_fleet(path, base)
    except ConfigError as err:
        text = str(err)
        raise ConfigError(text if text.startswith(str(path)) else f"{path}: {text}") from None


def _load_fleet(path: Path, base: ScoreConfig) -> Fleet:
    doc = from_dict(FleetFile, read_yaml(path))
    if not doc.cameras:
        raise ConfigError("cameras: at least one camera is needed")
    if doc.retention_check_s <= 0:
        raise ConfigError(f"retention_check_s must be positive, got {doc.retention_check_s}")
    if doc.events_log.keep < 1 or (doc.events_log.max_mb is not None and doc.events_log.max_mb <= 0):
        raise ConfigError("events_log: keep must be >= 1 and max_mb positive or null")
    secrets: dict[str, str] = {}
    if doc.secrets_file:
        secrets_path = (path.parent / doc.secrets_file).expanduser()
        secrets = _read_secrets(secrets_path)

    sinks: dict[str, dict[str, Any]] = {}
    for name, spec in doc.sinks.items():
        key = f"sinks.{name}"
        if not _NAME.fullmatch(str(name)):
            raise ConfigError(f"{key}: a sink name may hold only letters, digits, '-', '_' and '.'")
        if not isinstance(spec, Mapping) or spec.get("type") not in SINK_TYPES:
            raise ConfigError(f"{key}.type must be one of {', '.join(SINK_TYPES)}")
        kwargs = kwargs_from_dict(_sink_class(spec["type"]), {k: v for k, v in spec.items() if k != "type"},
                                  prefix=key, skip=("camera",))
        sinks[str(name)] = {"type": spec["type"], **kwargs}

    if "url" in doc.defaults:
        raise ConfigError("defaults.url: a URL belongs to one camera")
    # the defaults alone first, values too, so that their errors name `defaults`
    _resolve_settings(from_dict(CameraSettings, doc.defaults, prefix="defaults"), "defaults", base)
    cameras: dict[str, CameraPlan] = {}
    disabled = []
    for name, own in doc.cameras.items():
        key = f"cameras.{name}"
        if not _NAME.fullmatch(str(name)):
            raise ConfigError(f"{key}: a camera name may hold only letters, digits, '-', '_' and '.'")
        if not isinstance(own, Mapping):
            raise ConfigError(f"{key}: expected a mapping with at least `url`")
        written = deep_merge(doc.defaults, own)
        s = from_dict(CameraSettings, written, prefix=key)
        if not s.url:
            raise ConfigError(f"{key}.url is required")
        unknown_sinks = sorted(set(s.sinks or ()) - set(sinks))
        if unknown_sinks:
            raise ConfigError(f"{key}.sinks names {', '.join(unknown_sinks)}, not defined under `sinks`")
        cfg, alerts, retention = _resolve_settings(s, key, base)
        plan = CameraPlan(str(name), _resolve_url(s.url, f"{key}.url", secrets), cfg, tuple(s.sinks or ()),
                          alerts, retention, written)
        if s.enabled:
            cameras[plan.name] = plan
        else:
            disabled.append(plan.name)
    if not cameras:
        raise ConfigError("cameras: every camera is disabled")
    return Fleet(path, cameras, sinks, doc.events_log, doc.retention_check_s, disabled)

