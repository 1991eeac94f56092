"""Configuration: shipped YAML files load, defaults match, unknown keys and bad types fail."""

from pathlib import Path

import pytest

from vad.config import ConfigError, ScoreConfig, TrainConfig, load_config, parse_override, to_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_shipped_config_loads(monkeypatch, tmp_path):
    files = sorted(CONFIGS.rglob("*.yaml"))
    assert files, "no shipped configs found"
    from pipelines.train_frames import FrameTrainConfig

    for path in files:
        if path.parent.name == "monitor":  # camera fleets (pipelines/cameras.py), secrets from here
            from pipelines.cameras import load_fleet

            for name in ("GATE_USER", "GATE_PASS", "VAD_MQTT_PASSWORD"):
                monkeypatch.setenv(name, "x")
            copy = tmp_path / path.name
            copy.write_text(path.read_text())
            (tmp_path / "secrets.yaml").write_text("{}\n")
            assert load_fleet(copy, ScoreConfig()).cameras
            continue
        # configs/train/ holds `vad train` configs (the frame-prediction head has its own schema);
        # everything else composes `vad score`.
        if path.parent.name != "train":
            cls = ScoreConfig
        else:
            cls = FrameTrainConfig if path.stem == "ctd2gan" else TrainConfig
        cfg = load_config(cls, [path])
        if cls is FrameTrainConfig:
            from vad.heads.ctd2gan import CTD2GANConfig

            CTD2GANConfig(**cfg.head.params)  # the head's own keys are checked too


def test_score_yaml_states_the_defaults():
    # The README documents configs/pipelines/score.yaml as the defaults; they must not drift.
    assert load_config(ScoreConfig, [CONFIGS / "pipelines" / "score.yaml"]) == ScoreConfig()


def test_files_merge_in_order_then_overrides(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("features:\n  crop: 10crop\n  batch_size: 20\n")
    b = tmp_path / "b.yaml"
    b.write_text("features:\n  batch_size: 30\n")
    cfg = load_config(ScoreConfig, [a, b], ["events.threshold=2", "head.methods=[knn]", "head.reference=null"])
    assert cfg.features.crop == "10crop"
    assert cfg.features.batch_size == 30
    assert cfg.events.threshold == 2.0 and isinstance(cfg.events.threshold, float)
    assert cfg.head.methods == ["knn"]
    assert cfg.head.reference is None


def test_unknown_key_is_an_error_naming_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("features:\n  crops: 10crop\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*crops.*features"):
        load_config(ScoreConfig, [bad])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(ScoreConfig, [], ["nosuch.section=1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("features.batch_size=many", "integer"),
        ("cache.enabled=maybe", "true/false"),
        ("events.threshold=[1]", "number"),
        ("events.threshold=1e-3x", "number"),
        ("io.short_side=12.5", "integer"),
        ("features", "key.path=value"),
    ],
)
def test_bad_values_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ScoreConfig, [], [override])


def test_exponent_without_a_dot_is_a_number():
    # PyYAML (YAML 1.1) reads 5e-3 as a string; a float field still takes it as the number.
    cfg = load_config(ScoreConfig, [], ["events.threshold=5e-3"])
    assert cfg.events.threshold == 0.005 and isinstance(cfg.events.threshold, float)


def test_parse_override_nests():
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}
    assert to_dict(ScoreConfig())["snippets"] == {"length": 16, "stride": 16, "tail": "drop"}
