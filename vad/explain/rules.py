"""AnomalyRuler-style rules: induction from normal reference footage, deduction on new footage.

**Induction** (:func:`induce`). The reference snippets' perceptions are sampled into
``n_batches`` random batches of ``batch_size``; each batch proposes rules, and the batches'
proposals are aggregated: a *normal* rule is kept when it recurs in at least ``min_support`` of
the batches, every *anomaly* rule is kept (the paper's aggregation). Two ways to propose:

* structured (the offline backend, or any backend whose perceptions carry ``motion`` evidence):
  per region, the fastest speed and the largest moving fraction seen (the batch's
  ``quantile``), the directions seen, the actions seen (I3D top-1 with p >= ``min_action_p``),
  the object classes and their largest counts. A recurring numeric rule keeps the largest
  limit of its batches (the loosest: normal footage never breaks its own rules). Each normal
  rule has an anomaly counterpart ("faster than ... in the centre region is anomalous").
* text (a backend with a language model): the batch's descriptions go into
  :data:`INDUCTION_PROMPT`; the answer's ``Normal:`` and ``Anomaly:`` bullet lists are the
  proposals; normal rules recur when their words overlap (token Jaccard >= ``text_overlap``).

**Deduction** (:func:`deduce`): a perception is checked against the anomaly rules; each
broken rule is a :class:`Violation` with the observed figure, the limit and their ratio. Rules
written by the user in plain language (``explain.rules``) are matched by their keywords
against the actions, object classes and description of the snippet (offline), or handed to
the language model with the induced ones.

**Perception smoothing** (:func:`smooth_decisions`, as in the paper's code): the per-snippet
0/1 decisions are averaged by an EMA (``ema_alpha`` 0.33, pandas ``adjust=True`` weights),
thresholded at ``threshold`` (None: the mean of the EMA over the video, the paper's choice),
majority-voted over ``vote_window`` snippets, and the voted decisions averaged by a second EMA
whose alpha is that threshold: the paper's frame score.

Rules are stored as YAML (:meth:`RuleSet.save`) that a person can read and edit; ``check`` is
the machine-readable part of a rule (absent for text rules).
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import yaml

from vad.explain.motion import REGIONS
from vad.explain.perception import BackendError, Perception, PerceptionBackend
from vad.fsutil import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["INDUCTION_PROMPT", "DEDUCTION_PROMPT", "InductionConfig", "Rule", "RuleSet", "SmoothingConfig",
           "Violation", "deduce", "deduce_text", "ema", "induce", "keywords", "smooth_decisions", "user_rule"]

RULES_FORMAT = "vad-rules"
RULES_VERSION = 1

INDUCTION_PROMPT = (
    "You watch a fixed surveillance camera. These are descriptions of NORMAL footage from it:\n{descriptions}\n\n"
    "Write rules for this camera. First a line 'Normal:' followed by bullet lines '- ...' naming the normal human "
    "activities and environment objects; then a line 'Anomaly:' followed by bullet lines naming activities or "
    "objects that would be anomalous here. Short rules, one per line.")
DEDUCTION_PROMPT = (
    "Rules for this camera.\nNormal:\n{normal}\nAnomaly:\n{anomaly}\n\nDescription of the current footage:\n"
    "{description}\n\nAnswer with one word, 'anomaly' or 'normal', on the first line, then one sentence naming "
    "the rule that decides.")
RECHECK_PROMPT = (
    "{deduction}\n\nA first reading said: {answer}\nCheck again, strictly against the rules, and answer in the "
    "same format.")

_STOPWORDS = frozenset("a an the is are be on in of at to and or any anything someone something "
                       "anomalous anomaly normal not no with by for from this that these those it its here there".split())
_IRREGULAR = {"people": "person", "persons": "person", "men": "man", "women": "woman", "children": "child"}


def _singular(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or word.endswith("ss") or not word.endswith("s"):
        return word
    if word.endswith("ives"):
        return word[:-3] + "fe"  # knives -> knife
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]  # buses -> bus, boxes -> box
    return word[:-1]


@dataclass
class Rule:
    """One rule. ``check``: the structured test (None for a plain-language rule), e.g.
    ``{"op": "above", "field": "motion.regions.centre.speed", "limit": 2.3}``; ``support``: the
    fraction of induction batches that proposed it; ``source``: ``induced`` or ``user``."""

    id: str
    text: str
    check: dict[str, Any] | None = None
    support: float = 1.0
    source: str = "induced"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class RuleSet:
    normal: list[Rule] = field(default_factory=list)
    anomaly: list[Rule] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def with_user_rules(self, texts: Sequence[str]) -> RuleSet:
        extra = [user_rule(t, i) for i, t in enumerate(texts) if t.strip()]
        known = {r.text for r in self.anomaly}
        return RuleSet(self.normal, self.anomaly + [r for r in extra if r.text not in known], dict(self.meta))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        doc = {"format": RULES_FORMAT, "version": RULES_VERSION, **({"meta": self.meta} if self.meta else {}),
               "normal": [r.to_dict() for r in self.normal], "anomaly": [r.to_dict() for r in self.anomaly]}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text("# vad rules: edit freely; `check` is what the offline backend tests, `text` what a "
                           "language model reads.\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        return path

    @classmethod
    def load(cls, path: str | Path) -> RuleSet:
        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"{path}: cannot read rules: {err}") from None
        if not isinstance(doc, dict) or doc.get("format") != RULES_FORMAT:
            raise ValueError(f"{path}: not a vad rules file (format: {RULES_FORMAT})")
        out = cls(meta=dict(doc.get("meta") or {}))
        for kind in ("normal", "anomaly"):
            for i, d in enumerate(doc.get(kind) or []):
                if isinstance(d, str):
                    d = {"id": f"{kind}-{i}", "text": d, "source": "user"}
                if not isinstance(d, dict) or not isinstance(d.get("text"), str):
                    raise ValueError(f"{path}: {kind} rule {i} needs a text")
                unknown = set(d) - {"id", "text", "check", "support", "source"}
                if unknown:
                    raise ValueError(f"{path}: {kind} rule {i}: unknown keys {sorted(unknown)}")
                check = d.get("check")
                if check is not None:
                    problem = _check_problem(check)
                    if problem:
                        raise ValueError(f"{path}: {kind} rule {i}: check: {problem}")
                elif kind == "anomaly":  # a plain-language anomaly rule: its words are what the offline check looks for
                    check = {"op": "mentions", "keywords": keywords(d["text"])}
                getattr(out, kind).append(Rule(str(d.get("id", f"{kind}-{i}")), d["text"], check,
                                               float(d.get("support", 1.0)), str(d.get("source", "user"))))
        return out


def _check_problem(check: Any) -> str | None:
    """Why ``check`` is not a valid rule check (None when it is)."""
    if not isinstance(check, dict) or check.get("op") not in _OPS:
        return f"op must be one of {sorted(_OPS)}"
    op = check["op"]
    if op == "mentions":
        ok = isinstance(check.get("keywords"), list) and all(isinstance(k, str) for k in check["keywords"])
        return None if ok else "mentions needs keywords: a list of words"
    if op != "keys_in" and not isinstance(check.get("field"), str):
        return f"{op} needs a field (a dotted evidence path)"
    if op == "above":
        limit = check.get("limit")
        return None if isinstance(limit, (int, float)) and not isinstance(limit, bool) else "above needs a numeric limit"
    if not isinstance(check.get("values"), list):
        return f"{op} needs values: a list"
    when = check.get("when")
    if when is not None and not (isinstance(when, dict) and isinstance(when.get("field"), str)
                                 and isinstance(when.get("above"), (int, float))):
        return "when needs a field and a numeric above"
    return None


def keywords(text: str) -> list[str]:
    """The content words of a plain-language rule, singular-ish (``bicycles`` -> ``bicycle``)."""
    return [_singular(w) for w in re.findall(r"[a-z][a-z-]+", text.lower()) if w not in _STOPWORDS]


def user_rule(text: str, index: int = 0) -> Rule:
    """An anomaly rule written by the user ("bicycles on the walkway are anomalous")."""
    return Rule(f"user-{index}", text.strip(), {"op": "mentions", "keywords": keywords(text)}, 1.0, "user")


# ----------------------------------------------------------------------------- evidence paths

def _get(evidence: dict[str, Any], path: str) -> Any:
    node: Any = evidence
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _numeric_fields(evidence: dict[str, Any]) -> dict[str, float]:
    """Every numeric figure the structured rules look at, by dotted path."""
    out: dict[str, float] = {}
    motion = evidence.get("motion")
    if motion:
        for key in ("speed", "energy"):
            out[f"motion.frame.{key}"] = float(motion["frame"][key])
            for name in REGIONS:
                out[f"motion.regions.{name}.{key}"] = float(motion["regions"][name][key])
        out["motion.scene_change"] = float(motion.get("scene_change", 0.0))
    for cls, n in (evidence.get("objects") or {}).items():
        out[f"objects.{cls}"] = float(n)
    return out


_FIELD_WORDS = {"speed": "move faster than {limit:.2f} px/frame", "energy": "cover more than {pct:.0f}% of it moving"}


def _numeric_texts(path: str, limit: float) -> tuple[str, str]:
    parts = path.split(".")
    if parts[0] == "objects":
        return (f"At most {limit:.0f} {parts[1]} in view.", f"More than {limit:.0f} {parts[1]} in view is anomalous.")
    if parts[1] == "scene_change":
        return (f"The picture changes by at most {limit:.1f} grey levels within a snippet.",
                f"A picture change above {limit:.1f} grey levels within a snippet is anomalous.")
    where = "the whole picture" if parts[1] == "frame" else f"the {parts[2]} region"
    what = _FIELD_WORDS[parts[-1]].format(limit=limit, pct=100 * limit)
    verb = "Things in" if parts[-1] == "speed" else "Motion in"
    return (f"{verb} {where} never {what}.", f"In {where}, to {what} is anomalous.")


# ----------------------------------------------------------------------------- induction

@dataclass(frozen=True)
class InductionConfig:
    n_batches: int = 5
    batch_size: int = 32
    min_support: float = 0.6  # share of batches a normal rule must recur in
    quantile: float = 0.99  # the batch's limit for numeric figures
    min_action_p: float = 0.2  # top-1 actions below this probability are not evidence
    min_region_energy: float = 0.01  # a region's direction counts only when this much of it moves
    min_direction_share: float = 0.1  # a direction is normal when this share of moving snippets had it
    min_active_share: float = 0.2  # a region gets limits of its own when it moved in this share of snippets
    # "energy" (moving fraction) is available but not a default: crowds vary more than anomalies do
    fields: tuple[str, ...] = ("speed", "scene_change", "direction", "actions", "objects")
    text_overlap: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_batches < 1 or self.batch_size < 1 or not 0 < self.min_support <= 1 or not 0 < self.quantile <= 1:
            raise ValueError("induction: n_batches, batch_size >= 1; 0 < min_support, quantile <= 1")
        unknown = set(self.fields) - {"speed", "energy", "scene_change", "direction", "actions", "objects"}
        if unknown:
            raise ValueError(f"induction.fields: unknown {sorted(unknown)}")


def _batches(n: int, cfg: InductionConfig) -> list[np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    if n <= cfg.batch_size:
        return [np.arange(n)] * cfg.n_batches
    return [np.sort(rng.choice(n, cfg.batch_size, replace=False)) for _ in range(cfg.n_batches)]


def _propose_structured(batch: list[dict[str, Any]], cfg: InductionConfig) -> dict[tuple[str, str], Any]:
    """One batch's proposals: (op, field) -> limit (numbers) or set of values."""
    out: dict[tuple[str, str], Any] = {}
    numeric = [_numeric_fields(e) for e in batch]
    for path in sorted(set().union(*numeric)):
        kind = "scene_change" if path.endswith("scene_change") else "objects" if path.startswith("objects.") \
            else path.rsplit(".", 1)[-1]
        if kind not in cfg.fields:
            continue
        if path.startswith("motion.regions."):
            # a region that rarely moved in the reference has no reliable limit of its own: the
            # whole-picture rule covers it
            energy = [n.get(path.rsplit(".", 1)[0] + ".energy", 0.0) for n in numeric]
            if np.mean(np.asarray(energy) >= cfg.min_region_energy) < cfg.min_active_share:
                continue
        values = [n.get(path, 0.0) for n in numeric]
        out[("above", path)] = float(np.quantile(values, cfg.quantile))
    if "direction" in cfg.fields:
        for name in REGIONS:
            seen = [e["motion"]["regions"][name]["direction"] for e in batch if e.get("motion")
                    and e["motion"]["regions"][name]["energy"] >= cfg.min_region_energy
                    and e["motion"]["regions"][name]["direction"]]
            if seen:
                values, counts = np.unique(seen, return_counts=True)
                out[("not_in", f"motion.regions.{name}.direction")] = {
                    str(v) for v, c in zip(values, counts) if c >= cfg.min_direction_share * len(seen)}
    if "actions" in cfg.fields:
        tops = {e["actions"][0]["label"] for e in batch if e.get("actions") and e["actions"][0]["p"] >= cfg.min_action_p}
        if any(e.get("actions") for e in batch):
            out[("not_in", "actions.top")] = tops
    if "objects" in cfg.fields and any("objects" in e for e in batch):
        out[("keys_in", "objects")] = {c for e in batch for c, n in (e.get("objects") or {}).items() if n > 0}
    return out


def _structured_rules(perceptions: Sequence[Perception], cfg: InductionConfig) -> RuleSet:
    evidence = [p.evidence for p in perceptions]
    proposals = [_propose_structured([evidence[i] for i in idx], cfg) for idx in _batches(len(evidence), cfg)]
    need = cfg.min_support * len(proposals)
    normal, anomaly = [], []
    for key in sorted(set().union(*proposals)):
        found = [p[key] for p in proposals if key in p]
        if len(found) < need:
            continue
        op, path = key
        support = round(len(found) / len(proposals), 3)
        rid = f"{op}:{path}"
        if op == "above":
            limit = float(max(found))
            if limit <= 0:  # never moved there: "faster than 0" would fire on any motion
                continue
            n_text, a_text = _numeric_texts(path, limit)
            normal.append(Rule(rid, n_text, None, support))
            anomaly.append(Rule(rid, a_text, {"op": "above", "field": path, "limit": round(limit, 4)}, support))
            continue
        # a value is normal when it recurs in enough batches
        counts: dict[str, int] = {}
        for values in found:
            for v in values:
                counts[v] = counts.get(v, 0) + 1
        values = sorted(v for v, c in counts.items() if c >= need)
        if op == "not_in" and path.endswith("direction"):
            region = path.split(".")[2]
            check = {"op": "not_in", "field": path, "values": values,
                     "when": {"field": f"motion.regions.{region}.energy", "above": cfg.min_region_energy}}
            listed = ", ".join(values) or "nowhere"
            normal.append(Rule(rid, f"In the {region} region things move {listed}.", None, support))
            anomaly.append(Rule(rid, f"Motion in the {region} region in another direction than {listed} is "
                                     "anomalous.", check, support))
        elif op == "not_in":
            normal.append(Rule(rid, "Normal activities: " + (", ".join(values) or "none recognised") + ".", None, support))
            anomaly.append(Rule(rid, "Any other activity is anomalous.",
                                {"op": "not_in", "field": path, "values": values, "min_p": cfg.min_action_p}, support))
        else:
            normal.append(Rule(rid, "Objects seen: " + (", ".join(values) or "none") + ".", None, support))
            anomaly.append(Rule(rid, "Any other kind of object is anomalous.",
                                {"op": "keys_in", "field": path, "values": values}, support))
    return RuleSet(normal, anomaly)


def _bullets(answer: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"normal": [], "anomaly": []}
    section = None
    for line in answer.splitlines():
        s = line.strip()
        head = s.lower().strip("*#_ ").rstrip(":").strip("*_ ")
        if head.startswith("normal") and len(head) < 30:
            section = "normal"
            continue
        if head.startswith("anomal") and len(head) < 30:
            section = "anomaly"
            continue
        m = re.match(r"^(?:[-*\u2022]|\d+[.)])\s*(.+)$", s)
        if section and m:
            out[section].append(m.group(1).strip())
    return out


def _jaccard(a: str, b: str) -> float:
    x, y = set(keywords(a)), set(keywords(b))
    return len(x & y) / len(x | y) if x | y else 1.0


def _text_rules(perceptions: Sequence[Perception], backend: PerceptionBackend, cfg: InductionConfig) -> RuleSet:
    proposals = []
    for idx in _batches(len(perceptions), cfg):
        descriptions = "\n".join(f"- {perceptions[i].text}" for i in idx)
        answer = backend.complete(INDUCTION_PROMPT.format(descriptions=descriptions))
        found = _bullets(answer)
        if not found["normal"] and not found["anomaly"]:
            raise BackendError(f"rule induction: no 'Normal:'/'Anomaly:' bullet lists in the answer {answer[:200]!r}")
        proposals.append(found)
    clusters: list[list[str]] = []  # normal rule texts, grouped by overlap; one entry per batch at most
    members: list[set[int]] = []
    for b, found in enumerate(proposals):
        for text in found["normal"]:
            for c, group in enumerate(clusters):
                if _jaccard(text, group[0]) >= cfg.text_overlap:
                    group.append(text)
                    members[c].add(b)
                    break
            else:
                clusters.append([text])
                members.append({b})
    normal = []
    for group, batches in zip(clusters, members):
        support = len(batches) / len(proposals)
        if support >= cfg.min_support:
            text = max(group, key=group.count)  # the most common wording; ties: the first seen
            normal.append(Rule(f"normal-{len(normal)}", text, None, round(support, 3)))
    anomaly: list[Rule] = []
    for found in proposals:
        for text in found["anomaly"]:
            if all(_jaccard(text, r.text) < 0.8 for r in anomaly):
                anomaly.append(Rule(f"anomaly-{len(anomaly)}", text,
                                    {"op": "mentions", "keywords": keywords(text)}, 1.0))
    return RuleSet(normal, anomaly)


def induce(perceptions: Sequence[Perception], cfg: InductionConfig = InductionConfig(),
           backend: PerceptionBackend | None = None, user_rules: Sequence[str] = ()) -> RuleSet:
    """Rules from the reference snippets' perceptions (see the module doc); text induction when
    ``backend`` reasons in text, structured otherwise."""
    if not perceptions:
        raise ValueError("rule induction needs at least one perceived reference snippet")
    text = backend is not None and backend.reasons_in_text
    rules = _text_rules(perceptions, backend, cfg) if text else _structured_rules(perceptions, cfg)
    rules.meta = {"induction": "text" if text else "structured", "backend": backend.identity() if backend else "offline",
                  "n_snippets": len(perceptions), "n_batches": cfg.n_batches, "batch_size": cfg.batch_size,
                  "min_support": cfg.min_support}
    return rules.with_user_rules(user_rules)


# ----------------------------------------------------------------------------- deduction

@dataclass(frozen=True)
class Violation:
    """A broken anomaly rule: what was observed against what the rule allows; ``ratio`` > 1 for
    numeric rules (how many times the limit), 1 for a categorical one."""

    rule_id: str
    text: str
    field: str
    observed: Any
    limit: Any
    ratio: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_mentions(check: dict[str, Any], p: Perception) -> tuple[Any, float] | None:
    """A plain-language rule applies when one of its words names a recognised action or object
    class, or when the description holds all of its words ("bicycles on the walkway" fires on
    a bicycle, or on "a man rides a bicycle along the walkway", not on "people on the walkway")."""
    wanted = list(check.get("keywords", []))
    labels = [a["label"] for a in p.evidence.get("actions") or []] + \
        [c for c, n in (p.evidence.get("objects") or {}).items() if n]
    label_words = set(keywords(" ".join(labels)))
    hit = [k for k in wanted if k in label_words]
    if not hit and wanted:
        text_words = set(keywords(p.text))
        if all(k in text_words for k in wanted):
            hit = wanted
    return (hit, 1.0) if hit else None


def _apply(check: dict[str, Any], p: Perception) -> tuple[Any, float, float] | None:
    """(observed, ratio to limit, violated 0/1) or None when the rule does not apply."""
    op = check["op"]
    if op == "mentions":
        hit = _check_mentions(check, p)
        return (hit[0], 1.0, 1.0) if hit else None
    when = check.get("when")
    if when and (_get(p.evidence, when["field"]) or 0.0) < when["above"]:
        return None
    if op == "above":
        value = _get(p.evidence, check["field"])
        if value is None:
            value = 0.0 if check["field"].startswith("objects.") else None
        if value is None:
            return None
        ratio = float(value) / max(1e-9, float(check["limit"]))
        return value, ratio, float(ratio > 1.0)
    if op == "not_in":
        if check["field"] == "actions.top":
            acts = p.evidence.get("actions") or []
            if not acts or acts[0]["p"] < check.get("min_p", 0.0):
                return None
            value = acts[0]["label"]
        else:
            value = _get(p.evidence, check["field"])
        if value is None:
            return None
        return value, 1.0, float(value not in check["values"])
    if op == "keys_in":
        found = sorted(k for k, n in (p.evidence.get("objects") or {}).items() if n > 0 and k not in check["values"])
        return (found, 1.0, 1.0) if found else None
    raise ValueError(f"unknown rule op {op!r}")


_OPS = ("above", "not_in", "keys_in", "mentions")


def deduce(p: Perception, rules: RuleSet) -> tuple[list[Violation], float]:
    """The anomaly rules ``p`` breaks, and its strength: the largest observed/limit ratio of the
    numeric rules (below 1 when none is broken: how close it came), at least 1 when a categorical
    or plain-language rule is broken."""
    violations, strength = [], 0.0
    for rule in rules.anomaly:
        if not rule.check:
            continue
        r = _apply(rule.check, p)
        if r is None:
            continue
        observed, ratio, broken = r
        strength = max(strength, ratio if rule.check["op"] == "above" else (1.0 if broken else 0.0))
        if broken:
            violations.append(Violation(rule.id, rule.text, rule.check.get("field", "keywords"), observed,
                                        rule.check.get("limit", rule.check.get("values", rule.check.get("keywords"))),
                                        round(ratio, 4)))
    violations.sort(key=lambda v: -v.ratio)
    return violations, float(strength)


def _parse_answer(answer: str) -> tuple[bool, str]:
    lines = [ln.strip() for ln in answer.strip().splitlines() if ln.strip()]
    if not lines:
        raise BackendError("deduction: empty answer")
    first = lines[0].lower().strip(" .:*'\"")
    reason = " ".join(lines[1:]) or lines[0]
    if first.startswith("anomal"):
        return True, reason
    if first.startswith("normal"):
        return False, reason
    raise BackendError(f"deduction: the answer does not start with 'anomaly' or 'normal': {answer[:200]!r}")


def deduce_text(p: Perception, rules: RuleSet, backend: PerceptionBackend, images: Sequence[np.ndarray] = (),
                recheck: bool = True) -> tuple[bool, str]:
    """A language model's decision on ``p`` under ``rules`` (and its one-sentence reason); with
    ``recheck``, a provisional anomaly is asked about once more (robust reasoning)."""
    prompt = DEDUCTION_PROMPT.format(normal="\n".join(f"- {r.text}" for r in rules.normal) or "- (none)",
                                     anomaly="\n".join(f"- {r.text}" for r in rules.anomaly) or "- (none)",
                                     description=p.text)
    anomalous, reason = _parse_answer(backend.complete(prompt, images))
    if anomalous and recheck:
        anomalous, reason = _parse_answer(backend.complete(
            RECHECK_PROMPT.format(deduction=prompt, answer=f"anomaly. {reason}"), images))
    return anomalous, reason


# ----------------------------------------------------------------------------- smoothing

def ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average with pandas' ``adjust=True`` weights: y_t = sum_i (1-a)^i x_(t-i)
    / sum_i (1-a)^i over i = 0..t (causal)."""
    x = np.asarray(x, np.float64)
    if not 0 < alpha <= 1:
        raise ValueError(f"EMA alpha must be in (0, 1], got {alpha}")
    num = den = 0.0
    out = np.empty(len(x))
    for t, v in enumerate(x):
        num = v + (1 - alpha) * num
        den = 1.0 + (1 - alpha) * den
        out[t] = num / den
    return out


@dataclass(frozen=True)
class SmoothingConfig:
    ema_alpha: float = 0.33
    threshold: float | None = None  # None: the mean of the EMA over the video (the paper)
    vote_window: int = 1  # snippets; odd (made odd); 1 = no vote (the paper's setting)

    def __post_init__(self) -> None:
        if not 0 < self.ema_alpha <= 1 or self.vote_window < 1:
            raise ValueError("smoothing: 0 < ema_alpha <= 1, vote_window >= 1")


def _majority(flags: np.ndarray, window: int) -> np.ndarray:
    """Majority over a centred window of ``window`` (made odd) snippets; near the ends over the
    snippets that exist (so a lone 1 at an end is voted away like one in the middle)."""
    w = window + (window % 2 == 0)
    if w <= 1:
        return flags.astype(np.int8)
    pad = w // 2
    f = np.pad(flags.astype(np.int32), pad)  # zeros outside, and a count of what exists
    present = np.pad(np.ones(len(flags), np.int32), pad)
    kernel = np.ones(w, np.int32)
    sums = np.convolve(f, kernel, mode="valid")
    counts = np.convolve(present, kernel, mode="valid")
    return (2 * sums > counts).astype(np.int8)


def smooth_decisions(decisions: Iterable[float], cfg: SmoothingConfig = SmoothingConfig(),
                     recheck: Callable[[int], bool] | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Perception smoothing (module doc): per-snippet 0/1 ``decisions`` -> (voted decisions,
    scores, threshold used). ``recheck(i)``: robust reasoning, asked for every snippet the vote
    marks anomalous; False clears it."""
    d = np.asarray(list(decisions), np.float64)
    if d.size == 0:
        return np.zeros(0, np.int8), np.zeros(0), 0.0
    e = ema(d, cfg.ema_alpha)
    thr = float(e.mean()) if cfg.threshold is None else float(cfg.threshold)
    voted = _majority(e > thr, cfg.vote_window)
    if recheck is not None:
        for i in np.flatnonzero(voted):
            if not recheck(int(i)):
                voted[i] = 0
    scores = ema(voted, min(1.0, max(thr, 1e-7)))
    return voted, scores, thr
