"""AnomalyRuler-style rules (vad.explain.rules): structured and text induction, their aggregation
over random batches, deduction, user rules, the YAML rule files, perception smoothing; and the
resilience wrapper of perception backends (vad.explain.perception.ResilientBackend).

Perceptions are built by hand here, with motion evidence in the shape ``snippet_motion`` returns;
language-model answers come from small scripted backends."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import pytest
import yaml

import vad.explain.rules as rules_module
from vad.explain.motion import REGIONS
from vad.explain.perception import BackendError, Perception, PerceptionBackend, PerceptionRequest, ResilientBackend
from vad.explain.rules import (INDUCTION_PROMPT, InductionConfig, Rule, RuleSet, SmoothingConfig, Violation, deduce,
                               deduce_text, ema, induce, keywords, smooth_decisions, user_rule)

STILL = {"speed": 0.0, "energy": 0.0, "direction": None, "coherence": 0.0}


# --- hand-made perceptions ---------------------------------------------------------------------------

def motion(regions: dict[str, tuple[float, float, str | None]] | None = None, scene_change: float = 0.0
           ) -> dict[str, Any]:
    """Motion evidence as ``snippet_motion`` returns it, from per-region (speed, energy, direction);
    regions not named are still. The frame: the fastest region's speed and direction, the mean
    energy."""
    regs = {name: dict(STILL) for name in REGIONS}
    for name, (speed, energy, direction) in (regions or {}).items():
        assert name in regs
        regs[name] = {"speed": float(speed), "energy": float(energy), "direction": direction,
                      "coherence": 1.0 if direction else 0.0}
    moving = [r for r in regs.values() if r["direction"]]
    fastest = max(moving, key=lambda r: r["speed"]) if moving else STILL
    frame = {"speed": max(r["speed"] for r in regs.values()),
             "energy": round(sum(r["energy"] for r in regs.values()) / len(regs), 4),
             "direction": fastest["direction"], "coherence": fastest["coherence"]}
    return {"frame": frame, "regions": regs, "scene_change": float(scene_change), "analysis_size": [192, 144]}


def perception(regions: dict[str, tuple[float, float, str | None]] | None = None, *, scene_change: float = 0.0,
               actions: list[dict[str, Any]] | None = None, objects: dict[str, int] | None = None, text: str = "",
               start: int = 0) -> Perception:
    evidence: dict[str, Any] = {"motion": motion(regions, scene_change)}
    if actions is not None:
        evidence["actions"] = actions
    if objects is not None:
        evidence["objects"] = objects
    return Perception(text or "a snippet", evidence, "offline", start, start + 15)


def reference(n: int = 40, seed: int = 1, **extra: Any) -> tuple[list[Perception], np.ndarray, np.ndarray]:
    """Normal footage: things cross the centre left or right at 1-2 px/frame; the rest is still.
    Returns (perceptions, centre speeds, scene changes)."""
    rng = np.random.default_rng(seed)
    speeds = rng.uniform(1.0, 2.0, n)
    energies = rng.uniform(0.1, 0.3, n)
    changes = rng.uniform(0.5, 2.0, n)
    out = [perception({"centre": (speeds[i], energies[i], "left" if i % 2 else "right")}, scene_change=changes[i],
                      start=16 * i, **extra) for i in range(n)]
    return out, speeds, changes


def by_id(rules: list[Rule]) -> dict[str, Rule]:
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids)), ids
    return {r.id: r for r in rules}


def batch_quantile_floor(values: np.ndarray, batch_size: int, quantile: float) -> float:
    """A lower bound of the ``quantile`` of any batch of ``batch_size`` of ``values`` (linear
    interpolation): the batch's order statistic at floor(q (b - 1)), which is at least the
    whole set's order statistic of that rank."""
    b = min(batch_size, len(values))
    return float(np.sort(values)[int(np.floor(quantile * (b - 1)))])


CENTRE_SPEED = "above:motion.regions.centre.speed"
CENTRE_DIRECTION = "not_in:motion.regions.centre.direction"


# --- structured induction ------------------------------------------------------------------------------

def test_structured_induction_from_a_normal_reference() -> None:
    perceptions, speeds, changes = reference()
    cfg = InductionConfig()
    assert len(perceptions) > cfg.batch_size  # the batches are random subsets and differ
    rules = induce(perceptions, cfg)
    assert rules.meta["induction"] == "structured" and rules.meta["n_snippets"] == len(perceptions)
    anomaly = by_id(rules.anomaly)
    normal = by_id(rules.normal)
    assert set(normal) == set(anomaly)  # each normal rule has its anomaly counterpart

    speed = anomaly[CENTRE_SPEED]
    assert speed.check["op"] == "above" and speed.check["field"] == "motion.regions.centre.speed"
    limit = speed.check["limit"]
    assert batch_quantile_floor(speeds, cfg.batch_size, cfg.quantile) <= limit <= speeds.max() + 1e-4
    assert speed.support == 1.0  # every batch proposed it
    assert f"{limit:.2f} px/frame" in normal[CENTRE_SPEED].text and "centre" in normal[CENTRE_SPEED].text

    frame = anomaly["above:motion.frame.speed"].check
    assert batch_quantile_floor(speeds, cfg.batch_size, cfg.quantile) <= frame["limit"] <= speeds.max() + 1e-4
    change = anomaly["above:motion.scene_change"].check
    assert batch_quantile_floor(changes, cfg.batch_size, cfg.quantile) <= change["limit"] <= changes.max() + 1e-4

    direction = anomaly[CENTRE_DIRECTION].check
    assert direction["op"] == "not_in" and set(direction["values"]) == {"left", "right"}
    assert direction["when"] == {"field": "motion.regions.centre.energy", "above": cfg.min_region_energy}

    # the still regions get no limits or directions of their own; energy is not a default field
    for rule in rules.anomaly:
        field = rule.check["field"]
        if field.startswith("motion.regions."):
            assert field.split(".")[2] == "centre", field
        assert not field.endswith(".energy"), field


def test_quantile_one_over_the_whole_reference_is_its_maximum() -> None:
    perceptions, speeds, _ = reference(n=30)
    rules = induce(perceptions, InductionConfig(quantile=1.0, batch_size=64, n_batches=3))
    assert by_id(rules.anomaly)[CENTRE_SPEED].check["limit"] == pytest.approx(speeds.max(), abs=1e-4)


def test_energy_rules_when_asked_for() -> None:
    perceptions, _, _ = reference(n=20)
    energies = np.array([p.evidence["motion"]["regions"]["centre"]["energy"] for p in perceptions])
    rules = induce(perceptions, InductionConfig(fields=("energy",), quantile=1.0))
    anomaly = by_id(rules.anomaly)
    assert set(anomaly) == {"above:motion.frame.energy", "above:motion.regions.centre.energy"}
    assert anomaly["above:motion.regions.centre.energy"].check["limit"] == pytest.approx(energies.max(), abs=1e-4)


def test_a_rarely_moving_region_gets_no_limit_of_its_own() -> None:
    cfg = InductionConfig()
    n = 20

    def ref(active_every: int) -> list[Perception]:
        return [perception({"centre": (1.5, 0.2, "left"),
                            **({"top-left": (3.0, 0.05, "down")} if i % active_every == 0 else {})}, start=16 * i)
                for i in range(n)]

    rare = ref(10)  # the top-left region moves in 2 of 20 snippets: below min_active_share
    assert 2 / n < cfg.min_active_share
    assert "above:motion.regions.top-left.speed" not in by_id(induce(rare, cfg).anomaly)
    often = ref(2)  # in half of them
    assert 10 / n >= cfg.min_active_share
    assert by_id(induce(often, cfg).anomaly)["above:motion.regions.top-left.speed"].check["limit"] == 3.0


def test_invalid_induction_config_and_empty_reference() -> None:
    for kwargs in ({"n_batches": 0}, {"batch_size": 0}, {"min_support": 0}, {"min_support": 1.5},
                   {"quantile": 0}, {"fields": ("speed", "colour")}):
        with pytest.raises(ValueError):
            InductionConfig(**kwargs)
    with pytest.raises(ValueError, match="at least one"):
        induce([])


# --- structured deduction ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def motion_rules() -> tuple[RuleSet, np.ndarray]:
    perceptions, speeds, _ = reference()
    return induce(perceptions, InductionConfig()), speeds


def numeric_ratios(p: Perception, rules: RuleSet) -> dict[str, float]:
    """observed / limit of every numeric anomaly rule, read off the evidence here."""
    out = {}
    for r in rules.anomaly:
        if r.check and r.check["op"] == "above":
            node: Any = p.evidence
            for part in r.check["field"].split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is None and r.check["field"].startswith("objects."):
                node = 0.0
            if node is not None:
                out[r.id] = float(node) / float(r.check["limit"])
    return out


def test_deduce_a_fast_centre(motion_rules: tuple[RuleSet, np.ndarray]) -> None:
    rules, speeds = motion_rules
    observed = 2 * float(speeds.max())
    p = perception({"centre": (observed, 0.2, "left")}, scene_change=1.0)
    violations, strength = deduce(p, rules)
    found = {v.rule_id: v for v in violations}
    v = found[CENTRE_SPEED]
    limit = by_id(rules.anomaly)[CENTRE_SPEED].check["limit"]
    assert isinstance(v, Violation)
    assert v.field == "motion.regions.centre.speed" and v.observed == observed and v.limit == limit
    assert v.ratio == pytest.approx(observed / limit, abs=1e-4) and v.ratio > 1
    assert "above:motion.frame.speed" in found  # the whole picture is as fast
    assert CENTRE_DIRECTION not in found and "above:motion.scene_change" not in found
    assert [x.ratio for x in violations] == sorted((x.ratio for x in violations), reverse=True)
    assert strength == pytest.approx(max(numeric_ratios(p, rules).values()))
    assert strength >= v.ratio - 1e-4  # the violation's ratio is rounded


def test_deduce_a_normal_snippet(motion_rules: tuple[RuleSet, np.ndarray]) -> None:
    rules, speeds = motion_rules
    p = perception({"centre": (float(np.median(speeds)), 0.2, "right")}, scene_change=1.0)
    violations, strength = deduce(p, rules)
    assert violations == []
    ratios = numeric_ratios(p, rules)
    assert strength == pytest.approx(max(ratios.values()))  # how close it came
    assert 0 < strength < 1


def test_deduce_an_unusual_direction(motion_rules: tuple[RuleSet, np.ndarray]) -> None:
    rules, speeds = motion_rules
    cfg = InductionConfig()
    speed = float(np.median(speeds))
    violations, strength = deduce(perception({"centre": (speed, 0.2, "up")}, scene_change=1.0), rules)
    assert [v.rule_id for v in violations] == [CENTRE_DIRECTION]
    v = violations[0]
    assert v.observed == "up" and set(v.limit) == {"left", "right"} and v.ratio == 1.0
    assert strength == 1.0
    # the `when` guard: too little of the region moves for its direction to count
    faint = perception({"centre": (speed, cfg.min_region_energy / 2, "up")}, scene_change=1.0)
    violations, strength = deduce(faint, rules)
    assert violations == [] and strength < 1
    # a still centre has no direction to check
    assert deduce(perception({}, scene_change=1.0), rules)[0] == []


# --- aggregation over batches ------------------------------------------------------------------------

def rare_direction_reference(n: int = 100, rare: Sequence[int] = (17, 63)) -> list[Perception]:
    return [perception({"centre": (1.5, 0.2, "up" if i in rare else ("left" if i % 2 else "right"))}, start=16 * i)
            for i in range(n)]


def test_a_rare_direction_is_not_normal_with_high_support() -> None:
    perceptions = rare_direction_reference()
    # min_direction_share low: a batch proposes every direction it saw, even once
    base = dict(n_batches=10, min_direction_share=0.01, min_support=1.0, seed=3)
    # batches of 20 of 100: a batch holds one of the 2 "up" snippets with p ~ 0.36; all 10 of them
    # do with p ~ 4e-5
    random_batches = induce(perceptions, InductionConfig(batch_size=20, **base))
    rule = by_id(random_batches.anomaly)[CENTRE_DIRECTION]
    assert set(rule.check["values"]) == {"left", "right"}
    assert rule.support == 1.0
    normal_text = by_id(random_batches.normal)[CENTRE_DIRECTION].text
    assert "left" in normal_text and "right" in normal_text and "up" not in normal_text.split()
    # the same with every batch the whole reference: "up" is in all of them, hence normal
    whole = induce(perceptions, InductionConfig(batch_size=len(perceptions), **base))
    assert set(by_id(whole.anomaly)[CENTRE_DIRECTION].check["values"]) == {"left", "right", "up"}
    # and deduction follows
    up = perception({"centre": (1.5, 0.2, "up")})
    assert [v.rule_id for v in deduce(up, random_batches)[0]] == [CENTRE_DIRECTION]
    assert deduce(up, whole)[0] == []


def test_a_faint_direction_is_not_evidence() -> None:
    # every third snippet the centre drifts up, but too little of it moves for that to count
    cfg = InductionConfig()
    perceptions = [perception({"centre": (1.5, cfg.min_region_energy / 2, "up") if i % 3 == 0
                               else (1.5, 0.2, "left" if i % 2 else "right")}, start=16 * i) for i in range(30)]
    rules = induce(perceptions, cfg)
    assert set(by_id(rules.anomaly)[CENTRE_DIRECTION].check["values"]) == {"left", "right"}
    assert [v.rule_id for v in deduce(perception({"centre": (1.5, 0.2, "up")}), rules)[0]] == [CENTRE_DIRECTION]


def test_a_rule_proposed_by_too_few_batches_is_dropped() -> None:
    # only 2 of 100 snippets have object evidence: only the batches holding one propose object rules
    rare = (17, 63)
    perceptions = [perception({"centre": (1.5, 0.2, "left")}, objects={"person": 1} if i in rare else None,
                              start=16 * i) for i in range(100)]
    strict = InductionConfig(n_batches=10, batch_size=20, min_support=1.0, seed=3)
    assert "keys_in:objects" not in by_id(induce(perceptions, strict).anomaly)
    whole = InductionConfig(n_batches=10, batch_size=100, min_support=1.0, seed=3)
    assert by_id(induce(perceptions, whole).anomaly)["keys_in:objects"].check["values"] == ["person"]
    # with a low min_support the rule stays, its support the share of batches that held one
    loose = InductionConfig(n_batches=10, batch_size=20, min_support=0.05, seed=3)
    held = np.mean([bool(set(idx.tolist()) & set(rare)) for idx in rules_module._batches(100, loose)])
    assert 0 < held < 1
    assert by_id(induce(perceptions, loose).anomaly)["keys_in:objects"].support == pytest.approx(held, abs=1e-3)


def test_batches_are_random_subsets() -> None:
    cfg = InductionConfig(n_batches=6, batch_size=7, seed=11)
    batches = rules_module._batches(30, cfg)
    assert len(batches) == 6 and all(len(set(b.tolist())) == 7 and b.max() < 30 for b in batches)
    assert len({tuple(b.tolist()) for b in batches}) > 1
    assert [b.tolist() for b in rules_module._batches(30, cfg)] == [b.tolist() for b in batches]  # seeded
    assert all(b.tolist() == list(range(5)) for b in rules_module._batches(5, cfg))  # all of a small reference


def test_min_direction_share_within_a_batch() -> None:
    perceptions = rare_direction_reference()  # "up": 2 % of the moving snippets
    values = by_id(induce(perceptions, InductionConfig(batch_size=200, min_direction_share=0.1)).anomaly)
    assert set(values[CENTRE_DIRECTION].check["values"]) == {"left", "right"}


def test_numeric_limit_is_the_loosest_of_the_batches() -> None:
    perceptions, speeds, _ = reference(n=100, seed=5)
    cfg = InductionConfig(n_batches=8, batch_size=10, quantile=0.5, seed=2)
    limit = by_id(induce(perceptions, cfg).anomaly)[CENTRE_SPEED].check["limit"]
    # each batch's median is at least its 5th smallest value (floor(0.5 * 9) = 4), so the max of
    # the batch medians is at least the 5th smallest overall, and at most the 6th largest
    assert batch_quantile_floor(speeds, 10, 0.5) <= limit <= np.sort(speeds)[-5]
    # the loosest of several random medians is above the median of the whole reference
    assert limit > np.median(speeds) - 0.1


# --- actions and objects -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene_rules() -> RuleSet:
    perceptions = [perception({"centre": (1.5, 0.2, "left")}, actions=[{"label": "walking", "p": 0.6}],
                              objects={"person": 2 if i % 2 else 1}, start=16 * i) for i in range(20)]
    # a reading below min_action_p is not evidence of a normal activity
    perceptions.append(perception({"centre": (1.5, 0.2, "left")}, actions=[{"label": "dancing", "p": 0.1}],
                                  objects={"person": 1}, start=16 * 20))
    return induce(perceptions, InductionConfig())


def test_normal_actions_and_objects(scene_rules: RuleSet) -> None:
    anomaly, normal = by_id(scene_rules.anomaly), by_id(scene_rules.normal)
    actions = anomaly["not_in:actions.top"].check
    assert actions["values"] == ["walking"] and actions["min_p"] == InductionConfig().min_action_p
    assert "walking" in normal["not_in:actions.top"].text and "dancing" not in normal["not_in:actions.top"].text
    assert anomaly["keys_in:objects"].check["values"] == ["person"]
    assert "person" in normal["keys_in:objects"].text
    # half of the counts are 2: the 0.99 quantile lies between the two largest, both 2
    assert anomaly["above:objects.person"].check["limit"] == 2.0
    assert "2 person" in normal["above:objects.person"].text


def test_deduce_actions(scene_rules: RuleSet) -> None:
    def broken(**kw: Any) -> list[str]:
        return [v.rule_id for v in deduce(perception({"centre": (1.5, 0.2, "left")}, objects={"person": 1}, **kw),
                                          scene_rules)[0]]

    assert broken(actions=[{"label": "walking", "p": 0.9}]) == []
    assert broken(actions=[{"label": "skateboarding", "p": 0.5}, {"label": "walking", "p": 0.3}]) == \
        ["not_in:actions.top"]
    # the top-1 reading is too unsure to count
    assert broken(actions=[{"label": "skateboarding", "p": InductionConfig().min_action_p / 2}]) == []
    # only the top-1 counts
    assert broken(actions=[{"label": "walking", "p": 0.5}, {"label": "skateboarding", "p": 0.4}]) == []
    assert broken(actions=[]) == [] and broken() == []
    v = deduce(perception(actions=[{"label": "skateboarding", "p": 0.5}]), scene_rules)[0]
    assert [(x.observed, x.limit, x.ratio) for x in v] == [("skateboarding", ["walking"], 1.0)]


def test_deduce_objects(scene_rules: RuleSet) -> None:
    walking = [{"label": "walking", "p": 0.6}]
    vs, strength = deduce(perception({"centre": (1.5, 0.2, "left")}, actions=walking,
                                     objects={"person": 1, "bicycle": 1}), scene_rules)
    assert [(v.rule_id, v.observed, v.limit) for v in vs] == [("keys_in:objects", ["bicycle"], ["person"])]
    assert strength == 1.0
    # a class counted 0 is not in view
    assert deduce(perception(actions=walking, objects={"person": 1, "bicycle": 0}), scene_rules)[0] == []
    vs, strength = deduce(perception(actions=walking, objects={"person": 5}), scene_rules)
    assert [(v.rule_id, v.observed, v.limit, v.ratio) for v in vs] == [("above:objects.person", 5, 2.0, 2.5)]
    assert strength == pytest.approx(2.5)
    # no object evidence: no person in view, nothing broken
    assert deduce(perception(actions=walking), scene_rules)[0] == []


# --- user rules ----------------------------------------------------------------------------------------

def test_keywords() -> None:
    words = keywords("Bicycles on the walkway are anomalous")
    assert "bicycle" in words and "walkway" in words
    assert not {"on", "the", "are", "anomalous", "bicycles"} & set(words)
    assert keywords("A bus, the glass and TWO dogs!") == ["bus", "glass", "two", "dog"]


def test_user_rule_matches_objects_or_text() -> None:
    text = "Bicycles on the walkway are anomalous"
    rule = user_rule(text, 3)
    assert rule.id == "user-3" and rule.source == "user" and rule.text == text
    assert rule.check["op"] == "mentions" and set(rule.check["keywords"]) >= {"bicycle", "walkway"}
    rules = RuleSet().with_user_rules([text, "   "])
    assert [r.text for r in rules.anomaly] == [text]

    by_object = deduce(perception(objects={"bicycle": 1, "person": 2}), rules)
    assert [(v.rule_id, v.observed, v.ratio) for v in by_object[0]] == [("user-0", ["bicycle"], 1.0)]
    assert by_object[1] == 1.0
    by_text = deduce(perception(text="Two bicycles pass by quickly on the walkway."), rules)[0]
    assert [v.observed for v in by_text] == [["bicycle", "walkway"]]
    # the text must hold all of the rule's words: a bicycle elsewhere is not this rule
    assert deduce(perception(text="Two bicycles pass by quickly."), rules)[0] == []
    by_action = deduce(perception(actions=[{"label": "riding a bicycle", "p": 0.7}]), rules)[0]
    assert [v.observed for v in by_action] == [["bicycle"]]
    assert deduce(perception(objects={"person": 2}, text="People stroll by."), rules) == ([], 0.0)
    assert deduce(perception(actions=[{"label": "riding a bike", "p": 0.7}]), rules)[0] == []


def test_user_rule_plural_matches_a_detector_class() -> None:
    for text, cls in (("Buses in the square are anomalous", "bus"), ("Knives are anomalous", "knife")):
        rules = RuleSet().with_user_rules([text])
        assert [v.observed for v in deduce(perception(objects={cls: 1}), rules)[0]] == [[cls]], text


def test_user_rule_does_not_fire_on_its_place_alone() -> None:
    rules = RuleSet().with_user_rules(["Bicycles on the walkway are anomalous"])
    assert deduce(perception(text="People stroll along the walkway."), rules)[0] == []


def test_user_rules_join_induced_ones() -> None:
    perceptions, _, _ = reference(n=10)
    rules = induce(perceptions, InductionConfig(), user_rules=["Bicycles on the walkway are anomalous"])
    user = [r for r in rules.anomaly if r.source == "user"]
    assert [r.text for r in user] == ["Bicycles on the walkway are anomalous"]
    assert len(rules.anomaly) == len(induce(perceptions, InductionConfig()).anomaly) + 1
    # an existing text is not added twice
    assert len(rules.with_user_rules(["Bicycles on the walkway are anomalous"]).anomaly) == len(rules.anomaly)


# --- YAML rule files -----------------------------------------------------------------------------------

def test_yaml_round_trip(tmp_path: Path, scene_rules: RuleSet, motion_rules: tuple[RuleSet, np.ndarray]) -> None:
    for rules in (scene_rules.with_user_rules(["Bicycles on the walkway are anomalous"]), motion_rules[0]):
        path = rules.save(tmp_path / "sub" / "rules.yaml")
        text = path.read_text()
        assert text.startswith("#")
        doc = yaml.safe_load(text)
        assert doc["format"] == "vad-rules" and doc["version"] == 1
        loaded = RuleSet.load(path)
        assert [r.id for r in loaded.anomaly] == [r.id for r in rules.anomaly]
        assert [r.text for r in loaded.normal] == [r.text for r in rules.normal]
        assert [r.check for r in loaded.anomaly] == [r.check for r in rules.anomaly]
        assert [r.support for r in loaded.anomaly] == [r.support for r in rules.anomaly]
        assert [r.source for r in loaded.anomaly] == [r.source for r in rules.anomaly]
        assert loaded == rules
        assert not list(path.parent.glob(".tmp-*"))


HAND_WRITTEN = """\
# written by a person
format: vad-rules
version: 1
normal:
  - People walk across the square.
anomaly:
  - Skateboards are anomalous here.
  - id: centre-speed
    text: Fast things in the centre are anomalous.
    check: {{op: above, field: motion.regions.centre.speed, limit: {limit}}}
"""


def test_hand_edited_yaml(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    p = perception({"centre": (3.0, 0.2, "left")})
    path.write_text(HAND_WRITTEN.format(limit=5.0))
    rules = RuleSet.load(path)
    assert [(r.id, r.text, r.check, r.source) for r in rules.normal] == \
        [("normal-0", "People walk across the square.", None, "user")]
    plain, speed = rules.anomaly
    assert (plain.id, plain.text, plain.check, plain.source) == (
        "anomaly-0", "Skateboards are anomalous here.", {"op": "mentions", "keywords": ["skateboard"]}, "user")
    assert (speed.id, speed.check["limit"], speed.support, speed.source) == ("centre-speed", 5.0, 1.0, "user")
    violations, strength = deduce(p, rules)
    assert violations == [] and strength == pytest.approx(3.0 / 5.0)

    path.write_text(HAND_WRITTEN.format(limit=2.0))  # the limit edited
    violations, strength = deduce(p, RuleSet.load(path))
    assert [(v.rule_id, v.observed, v.limit, v.ratio) for v in violations] == [("centre-speed", 3.0, 2.0, 1.5)]


@pytest.mark.parametrize(("text", "message"), [
    ("format: other\nanomaly: []\n", "not a vad rules file"),
    ("- just\n- a list\n", "not a vad rules file"),
    ("", "not a vad rules file"),
    ("format: [unclosed\n", "cannot read rules"),
    ("format: vad-rules\nanomaly:\n  - {text: fast, limt: 3}\n", r"anomaly rule 0: unknown keys \['limt'\]"),
    ("format: vad-rules\nanomaly:\n  - x\n  - {text: t, check: {op: below, field: f, limit: 1}}\n",
     "anomaly rule 1: check: op must be one of"),
    ("format: vad-rules\nanomaly:\n  - {text: t, check: above}\n", "check: op must be one of"),
    ("format: vad-rules\nnormal:\n  - {id: a}\n", "normal rule 0 needs a text"),
    ("format: vad-rules\nanomaly:\n  - {text: 3}\n", "anomaly rule 0 needs a text"),
    ("format: vad-rules\nanomaly:\n  - 3\n", "anomaly rule 0 needs a text"),
])
def test_bad_rule_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        RuleSet.load(path)
    assert str(path) in str(err.value)


def test_missing_rule_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read rules"):
        RuleSet.load(tmp_path / "nope.yaml")


def test_a_check_missing_its_limit_is_refused_on_load(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("format: vad-rules\nanomaly:\n  - {text: fast, check: {op: above, "
                    "field: motion.regions.centre.speed}}\n")
    try:
        rules = RuleSet.load(path)
    except ValueError:
        return
    deduce(perception({"centre": (3.0, 0.2, "left")}), rules)  # KeyError: 'limit'


# --- text induction and deduction with a scripted language model ---------------------------------

class Scripted(PerceptionBackend):
    """A language model that answers by ``answer(prompt, call index)`` and records its prompts."""

    name = "scripted"

    def __init__(self, answer: Callable[[str, int], str]) -> None:
        self.answer = answer
        self.prompts: list[str] = []
        self.images: list[Sequence[np.ndarray]] = []

    def perceive(self, request: PerceptionRequest) -> Perception:
        raise BackendError("not used")

    def complete(self, prompt: str, images: Sequence[np.ndarray] = ()) -> str:
        self.prompts.append(prompt)
        self.images.append(images)
        return self.answer(prompt, len(self.prompts) - 1)


BATCH_ANSWERS = [
    "Normal:\n- People walk along the path\n- Cars parked near the gate\n- A dog runs on the grass\n"
    "Anomaly:\n- Riding a bicycle on the path\n- Fighting\n",
    "Here are the rules.\nNormal:\n* people walking along the path\n* cars parked near the gate.\n"
    "Anomaly:\n* riding bicycles on the path\n1. Someone fighting\n",
    "normal\n1. People walk along the path.\n2) Benches by the fountain\nanomalies:\n- A car driving on the path\n",
]


def descriptions(n: int) -> list[Perception]:
    return [Perception(f"Snippet {i}: two people walk along the path.", {}, "scripted", 16 * i, 16 * i + 15)
            for i in range(n)]


def test_text_induction_aggregates_batches() -> None:
    backend = Scripted(lambda prompt, i: BATCH_ANSWERS[i])
    perceptions = descriptions(6)
    cfg = InductionConfig(n_batches=3, min_support=0.6)
    rules = induce(perceptions, cfg, backend)
    assert len(backend.prompts) == cfg.n_batches
    for prompt in backend.prompts:  # 6 <= batch_size: every batch is the whole reference
        assert prompt.startswith(INDUCTION_PROMPT.split("{descriptions}")[0])
        assert all(f"- {p.text}" in prompt for p in perceptions)
    assert rules.meta["induction"] == "text" and rules.meta["backend"] == "scripted"

    normal = {r.text: r for r in rules.normal}
    assert len(normal) == 2, list(normal)
    walk = [r for t, r in normal.items() if "along the path" in t]
    assert len(walk) == 1 and walk[0].support == 1.0  # in all three batches, worded three ways
    assert walk[0].text in {"People walk along the path", "people walking along the path",
                            "People walk along the path."}
    cars = [r for t, r in normal.items() if "gate" in t]
    assert len(cars) == 1 and cars[0].support == pytest.approx(2 / 3, abs=1e-3)  # in two of three
    assert not any("dog" in t or "fountain" in t for t in normal)  # in one batch only
    assert all(r.check is None for r in rules.normal)

    # every anomaly rule is kept, the same one worded twice only once
    texts = [r.text for r in rules.anomaly]
    assert texts == ["Riding a bicycle on the path", "Fighting", "A car driving on the path"]
    assert [r.id for r in rules.anomaly] == ["anomaly-0", "anomaly-1", "anomaly-2"]
    assert rules.anomaly[0].check == {"op": "mentions", "keywords": keywords("Riding a bicycle on the path")}

    strict = induce(perceptions, InductionConfig(n_batches=3, min_support=1.0),
                    Scripted(lambda prompt, i: BATCH_ANSWERS[i]))
    assert [r.support for r in strict.normal] == [1.0] and "along the path" in strict.normal[0].text
    # the induced rules serve the offline deduction too
    assert [v.rule_id for v in deduce(Perception("Somebody is fighting.", {}, "scripted"), rules)[0]] == ["anomaly-1"]


def test_text_induction_batches_differ_when_the_reference_is_larger() -> None:
    backend = Scripted(lambda prompt, i: BATCH_ANSWERS[0])
    perceptions = descriptions(12)
    induce(perceptions, InductionConfig(n_batches=4, batch_size=5), backend)
    batches = [frozenset(line for line in prompt.splitlines() if line.startswith("- Snippet"))
               for prompt in backend.prompts]
    assert all(len(b) == 5 for b in batches)
    assert len(set(batches)) > 1


@pytest.mark.parametrize("answer", ["I cannot help with that.", "", "Normal:\nnothing listed as bullets\n"])
def test_text_induction_malformed_answer(answer: str) -> None:
    with pytest.raises(BackendError, match="Normal:"):
        induce(descriptions(3), InductionConfig(n_batches=2), Scripted(lambda prompt, i: answer))


def test_a_backend_that_does_not_reason_induces_structured_rules() -> None:
    class NoText(PerceptionBackend):
        name = "figures"

        def perceive(self, request: PerceptionRequest) -> Perception:
            raise BackendError("not used")

    perceptions, _, _ = reference(n=10)
    rules = induce(perceptions, InductionConfig(), NoText())
    assert rules.meta["induction"] == "structured" and rules.meta["backend"] == "figures"
    assert CENTRE_SPEED in by_id(rules.anomaly)


TEXT_RULES = RuleSet([Rule("n0", "People walk along the path.")],
                     [Rule("a0", "Riding a bicycle on the path is anomalous.")])
CYCLIST = Perception("A cyclist rides along the path.", {}, "scripted")


def test_deduce_text_anomaly_is_rechecked() -> None:
    backend = Scripted(lambda prompt, i: ["Anomaly\nRiding a bicycle breaks rule a0.",
                                          "**Anomaly**\nStill a bicycle on the path."][i])
    image = np.zeros((4, 4, 3), np.uint8)
    anomalous, reason = deduce_text(CYCLIST, TEXT_RULES, backend, [image])
    assert (anomalous, reason) == (True, "Still a bicycle on the path.")
    assert len(backend.prompts) == 2
    first, second = backend.prompts
    assert "- People walk along the path." in first and "- Riding a bicycle on the path is anomalous." in first
    assert CYCLIST.text in first
    assert second.startswith(first) and "anomaly. Riding a bicycle breaks rule a0." in second
    assert all(len(imgs) == 1 and imgs[0] is image for imgs in backend.images)


def test_deduce_text_recheck_can_overturn() -> None:
    backend = Scripted(lambda prompt, i: ["anomaly.\nA bicycle.", "Normal.\nOn a second look, a pram."][i])
    assert deduce_text(CYCLIST, TEXT_RULES, backend) == (False, "On a second look, a pram.")
    assert len(backend.prompts) == 2


def test_deduce_text_normal_is_not_rechecked() -> None:
    backend = Scripted(lambda prompt, i: "  normal\n\nPeople walking.\n")
    assert deduce_text(CYCLIST, TEXT_RULES, backend) == (False, "People walking.")
    assert len(backend.prompts) == 1


def test_deduce_text_without_recheck() -> None:
    backend = Scripted(lambda prompt, i: "Anomaly")
    assert deduce_text(CYCLIST, TEXT_RULES, backend, recheck=False) == (True, "Anomaly")  # no reason line
    assert len(backend.prompts) == 1


def test_deduce_text_with_no_rules() -> None:
    backend = Scripted(lambda prompt, i: "normal\nfine")
    deduce_text(CYCLIST, RuleSet(), backend)
    assert backend.prompts[0].count("- (none)") == 2


@pytest.mark.parametrize("answers", [["Perhaps.\nHard to say."], [""], ["   \n  \n"],
                                     ["anomaly\nbicycle", "I am not sure"]])
def test_deduce_text_malformed_answer(answers: list[str]) -> None:
    with pytest.raises(BackendError, match="deduction"):
        deduce_text(CYCLIST, TEXT_RULES, Scripted(lambda prompt, i: answers[i]))


# --- smoothing -----------------------------------------------------------------------------------------

def reference_ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """y_t = sum_i (1-a)^i x_(t-i) / sum_i (1-a)^i, i = 0..t: pandas' adjust=True, written out."""
    x = np.asarray(x, np.float64)
    out = np.empty(len(x))
    for t in range(len(x)):
        w = (1 - alpha) ** np.arange(t + 1)
        out[t] = float(np.sum(w * x[t::-1]) / np.sum(w))
    return out


def reference_majority(flags: np.ndarray, window: int) -> np.ndarray:
    """More than half of the ``window`` snippets centred on each one, the window cut at the ends
    by repeating the end values."""
    w = window + (window % 2 == 0)
    half = w // 2
    padded = [flags[0]] * half + list(flags) + [flags[-1]] * half
    return np.array([int(sum(padded[i:i + w]) > half) for i in range(len(flags))], np.int8)


@pytest.mark.parametrize("alpha", [0.05, 0.33, 0.7, 1.0])
def test_ema_is_the_adjusted_formula(alpha: float) -> None:
    x = np.random.default_rng(7).uniform(-1, 3, 60)
    got = ema(x, alpha)
    np.testing.assert_allclose(got, reference_ema(x, alpha), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got, pd.Series(x).ewm(alpha=alpha, adjust=True).mean().to_numpy(), rtol=1e-10)
    assert ema([], alpha).shape == (0,)


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_ema_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError):
        ema([1.0, 2.0], alpha)


def test_vote_removes_isolated_anomalies() -> None:
    cfg = SmoothingConfig(ema_alpha=1.0, threshold=0.5, vote_window=3)  # EMA alpha 1: the decisions
    d = [0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0, 0]
    voted, scores, thr = smooth_decisions(d, cfg)
    assert thr == 0.5
    assert voted.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0]
    np.testing.assert_allclose(scores, reference_ema(voted, 0.5))
    # a single gap inside a run is filled
    assert smooth_decisions([0, 1, 1, 0, 1, 1, 0], cfg)[0].tolist() == [0, 1, 1, 1, 1, 1, 0]
    # an even window is made odd
    assert smooth_decisions(d, SmoothingConfig(ema_alpha=1.0, threshold=0.5, vote_window=2))[0].tolist() == \
        voted.tolist()
    # no vote
    assert smooth_decisions(d, SmoothingConfig(ema_alpha=1.0, threshold=0.5))[0].tolist() == d


def test_vote_removes_isolated_anomalies_at_the_ends() -> None:
    cfg = SmoothingConfig(ema_alpha=1.0, threshold=0.5, vote_window=3)
    assert smooth_decisions([1, 0, 0, 0, 0, 0, 0, 1], cfg)[0].tolist() == [0] * 8


@pytest.mark.parametrize("vote_window", [1, 3, 5])
def test_smoothing_with_the_mean_threshold(vote_window: int) -> None:
    d = np.array([0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0], float)
    voted, scores, thr = smooth_decisions(d, SmoothingConfig(vote_window=vote_window))
    e = reference_ema(d, 0.33)
    assert thr == pytest.approx(float(e.mean()))
    assert voted.tolist() == reference_majority((e > thr).astype(int), vote_window).tolist()
    np.testing.assert_allclose(scores, reference_ema(voted, thr), rtol=1e-10)
    assert voted[9:12].all()  # the run of anomalies survives
    assert not voted[:3].any()  # before any anomaly


def test_smoothing_recheck_clears_snippets() -> None:
    d = [0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    cfg = SmoothingConfig(ema_alpha=1.0, threshold=0.5, vote_window=3)
    voted, scores, _ = smooth_decisions(d, cfg)
    asked: list[int] = []

    def first_run_only(i: int) -> bool:
        asked.append(i)
        return i < 8

    rechecked, rescored, _ = smooth_decisions(d, cfg, first_run_only)
    assert asked == np.flatnonzero(voted).tolist()  # asked for each snippet the vote marks
    assert rechecked.tolist() == [v if i < 8 else 0 for i, v in enumerate(voted.tolist())]
    assert (rescored <= scores + 1e-12).all() and (rescored[9:] < scores[9:]).any()
    np.testing.assert_allclose(rescored[:9], scores[:9])

    cleared, zero, _ = smooth_decisions(d, cfg, lambda i: False)
    assert not cleared.any() and not zero.any()


def test_smoothing_edge_cases() -> None:
    voted, scores, thr = smooth_decisions([])
    assert voted.shape == (0,) and scores.shape == (0,) and thr == 0.0
    voted, scores, thr = smooth_decisions([0, 0, 0, 0])
    assert thr == 0.0 and not voted.any() and not scores.any()
    voted, scores, thr = smooth_decisions(iter([0.0, 1.0, 1.0]))  # any iterable
    assert voted.shape == (3,)
    for kwargs in ({"ema_alpha": 0}, {"ema_alpha": 2}, {"vote_window": 0}):
        with pytest.raises(ValueError):
            SmoothingConfig(**kwargs)


# --- ResilientBackend ----------------------------------------------------------------------------------

def snippet_request(start: int = 0, n: int = 3) -> PerceptionRequest:
    return PerceptionRequest("cam", start, start + n - 1, 10.0, np.zeros((n, 8, 8, 3), np.uint8))


class Counting(PerceptionBackend):
    """Answers after ``fail_first`` failures; ``delay_s``: how long each call blocks (released at
    teardown); ``result``: what it returns instead of a Perception."""

    def __init__(self, name: str = "counting", fail_first: int = 0, delay_s: float = 0.0, result: Any = None,
                 tag: str = "") -> None:
        self.name, self.fail_first, self.delay_s, self.result, self.tag = name, fail_first, delay_s, result, tag
        self.calls = 0
        self.release = threading.Event()

    def identity(self) -> str:
        return f"{self.name}:{self.tag}"

    def perceive(self, request: PerceptionRequest) -> Perception:
        self.calls += 1
        if self.delay_s:
            self.release.wait(self.delay_s)
        if self.calls <= self.fail_first:
            raise RuntimeError(f"flaky failure {self.calls}")
        if self.result is not None:
            return self.result
        return Perception(f"seen {request.key}", {"n": len(request.frames)}, self.name, request.start_frame,
                          request.end_frame)

    def complete(self, prompt: str, images: Sequence[np.ndarray] = ()) -> str:
        self.calls += 1
        return self.result if self.result is not None else f"echo {prompt}"


def test_resilient_timeout() -> None:
    inner = Counting(delay_s=10.0)
    timeout, retries, backoff = 0.2, 1, 0.05
    backend = ResilientBackend(inner, timeout_s=timeout, retries=retries, backoff_s=backoff)
    try:
        t0 = time.monotonic()
        with pytest.raises(BackendError, match="timed out after 0.2 s"):
            backend.perceive(snippet_request())
        elapsed = time.monotonic() - t0
        assert timeout * (retries + 1) + backoff - 0.05 <= elapsed < timeout * (retries + 1) + backoff + 1.0
        assert backend.calls == retries + 1 and backend.failures == 1
    finally:
        inner.release.set()
        backend.close()


def test_resilient_retries_a_failure() -> None:
    inner = Counting(fail_first=1)
    backend = ResilientBackend(inner, timeout_s=5.0, retries=1, backoff_s=0.01)
    p = backend.perceive(snippet_request())
    assert p.text.startswith("seen cam:0-2:") and inner.calls == 2 and backend.calls == 2 and backend.failures == 0
    # cached: no further call for the same snippet
    assert backend.perceive(snippet_request()) is p
    assert inner.calls == 2 and backend.calls == 2
    backend.perceive(snippet_request(start=3))
    assert inner.calls == 3
    backend.close()


def test_resilient_gives_up_after_its_retries() -> None:
    inner = Counting(fail_first=10)
    backend = ResilientBackend(inner, timeout_s=5.0, retries=2, backoff_s=0.0)
    with pytest.raises(BackendError, match="flaky failure 3"):
        backend.perceive(snippet_request())
    assert inner.calls == 3 and backend.failures == 1
    backend.close()


def test_resilient_disk_cache(tmp_path: Path) -> None:
    first = Counting()
    a = ResilientBackend(first, cache_dir=tmp_path / "cache")
    p = a.perceive(snippet_request())
    files = list((tmp_path / "cache").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["text"] == p.text
    a.close()

    second = Counting()
    b = ResilientBackend(second, cache_dir=tmp_path / "cache")
    q = b.perceive(snippet_request())
    assert second.calls == 0 and b.calls == 0 and q.to_dict() == p.to_dict()
    b.close()

    # another model (identity) is not served the first one's answers
    other = Counting(tag="another-model")
    c = ResilientBackend(other, cache_dir=tmp_path / "cache")
    c.perceive(snippet_request())
    assert other.calls == 1 and len(list((tmp_path / "cache").glob("*.json"))) == 2
    c.close()

    # an unreadable cache file is ignored and rewritten
    files[0].write_text("{not json")
    fresh = Counting()
    d = ResilientBackend(fresh, cache_dir=tmp_path / "cache")
    assert d.perceive(snippet_request()).text == p.text and fresh.calls == 1
    assert json.loads(files[0].read_text())["text"] == p.text
    d.close()


def test_resilient_malformed_answers() -> None:
    backend = ResilientBackend(Counting(result={"text": "not a Perception"}), retries=0)
    with pytest.raises(BackendError, match="malformed answer dict"):
        backend.perceive(snippet_request())
    assert backend.failures == 1
    with pytest.raises(BackendError, match="malformed answer dict"):
        backend.complete("hello")
    backend.close()
    text = ResilientBackend(Counting(), retries=0)
    assert text.complete("hello") == "echo hello" and text.reasons_in_text
    assert not ResilientBackend(_Figures()).reasons_in_text
    text.close()


class _Figures(PerceptionBackend):
    name = "figures"

    def perceive(self, request: PerceptionRequest) -> Perception:
        return Perception("", {}, self.name)


def test_resilient_bad_settings() -> None:
    for kwargs in ({"timeout_s": 0}, {"retries": -1}, {"backoff_s": -1}):
        with pytest.raises(ValueError):
            ResilientBackend(_Figures(), **kwargs)


def test_cache_key_tells_apart_two_snippets_at_the_same_place_with_other_pixels() -> None:
    # two videos scored under one name (a head called without a source id) never share answers
    inner = Counting()
    backend = ResilientBackend(inner, timeout_s=5.0)
    a = snippet_request()
    b = PerceptionRequest(a.source_id, a.start_frame, a.end_frame, a.fps, 255 - a.frames)
    assert a.key != b.key and backend.perceive(a).text != backend.perceive(b).text and inner.calls == 2
    backend.close()
