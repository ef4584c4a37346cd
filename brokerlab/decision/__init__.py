"""The decision guide of notebook 08a: requirements in, the system(s) out, each reason linked to the notebook cell
whose asserts measured it.

The rules are data (`rules.yaml`, next to this file). A rule fires when the stated requirements match its `when`;
it moves systems up (`for`, weighted), down (`against`), out (`rules_out`) or adds a `condition` the answer states.
Its links come from the claims ledger (`claims: [C79]`: the ledger's reason is the measurement, its cells the links)
or from `evidence` entries naming cells directly. `problems()` checks every link with the ledger's own checker.

    from brokerlab.decision import recommend
    answer = recommend({"replay": True, "ordering": "per key"})
    answer.choice            # 'Kafka'
    answer.reasons           # (Reason(system='Kafka', effect='+3', because=..., evidence=(Evidence(...), ...)), ...)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from .. import claims as ledger

RULES = Path(__file__).with_name("rules.yaml")


@dataclass(frozen=True)
class Evidence:
    cell: ledger.CellRef
    measured: str           # what the cell measured (for a ledger claim: its reason)
    claim: str | None = None  # the ledger claim it comes from, if any

    @property
    def href(self) -> str:
        """A link that opens the notebook at the cell, relative to notebooks/ (JupyterLab and nbconvert pages
        both understand the `#cell-id=` fragment)."""
        return f"{self.cell.notebook}.ipynb#cell-id={self.cell.cell_id}"


@dataclass(frozen=True)
class Reason:
    rule: str
    system: str | None      # None: a condition that is not about one system's score
    effect: str             # '+3', '-2', 'ruled out', 'condition'
    because: str
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class Answer:
    requirements: dict
    choice: str | None                      # the best-scoring system not ruled out; None when nothing was asked
    ranking: tuple[tuple[str, int], ...]    # (system, score) for every system with a positive score, best first
    ruled_out: tuple[str, ...]
    reasons: tuple[Reason, ...]             # every rule that fired, in rule order
    conditions: tuple[str, ...] = field(default=())  # what must hold for the answer to be right

    @property
    def systems(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.ranking)

    def reasons_for(self, system: str) -> tuple[Reason, ...]:
        return tuple(r for r in self.reasons if r.system == system)


@dataclass(frozen=True)
class Rule:
    id: str
    when: dict
    weights: dict[str, int]     # system -> + (for) or - (against)
    rules_out: tuple[str, ...]
    because: str
    condition: str | None
    about: str | None           # a condition about one system is stated only when that system is in the answer
    evidence: tuple[Evidence, ...]

    def fires(self, requirements: dict) -> bool:
        for key, wanted in self.when.items():
            value = requirements.get(key)
            if isinstance(wanted, list) and value not in wanted:
                return False
            if not isinstance(wanted, list) and value != wanted:
                return False
        return True


@dataclass(frozen=True)
class Guide:
    systems: tuple[str, ...]
    requirements: dict          # name -> {kind: bool|choice, label, options}
    rules: tuple[Rule, ...]

    def defaults(self) -> dict:
        """Nothing asked: every bool False, every choice its first option."""
        return {name: (False if spec["kind"] == "bool" else spec["options"][0])
                for name, spec in self.requirements.items()}


@lru_cache(maxsize=None)
def load(path: Path = RULES) -> Guide:
    data = yaml.safe_load(Path(path).read_text())
    claims = {c.id: c for c in ledger.load()}
    rules = []
    for raw in data["rules"]:
        evidence = []
        for claim_id in raw.get("claims", ()):
            claim = claims.get(claim_id)
            if claim is None:
                raise ValueError(f"{path.name}: rule {raw['id']}: no claim {claim_id} in the claims ledger")
            evidence += [Evidence(ref, claim.reason, claim_id) for ref in claim.shown_by]
        evidence += [Evidence(ledger.CellRef.parse(e["cell"]), e["measured"]) for e in raw.get("evidence", ())]
        weights = {**raw.get("for", {}), **{s: -w for s, w in raw.get("against", {}).items()}}
        rules.append(Rule(id=raw["id"], when=raw["when"], weights=weights, rules_out=tuple(raw.get("rules_out", ())),
                          because=raw.get("because", ""), condition=raw.get("condition"), about=raw.get("about"),
                          evidence=tuple(evidence)))
    return Guide(systems=tuple(data["systems"]), requirements=data["requirements"], rules=tuple(rules))


def check_requirements(requirements: dict, guide: Guide | None = None) -> dict:
    """The requirements with defaults filled in; ValueError for an unknown name or option (a typo would
    otherwise silently match no rule)."""
    guide = guide or load()
    full = guide.defaults()
    for name, value in requirements.items():
        spec = guide.requirements.get(name)
        if spec is None:
            raise ValueError(f"unknown requirement {name!r}; known: {', '.join(guide.requirements)}")
        allowed = (True, False) if spec["kind"] == "bool" else tuple(spec["options"])
        if value not in allowed:
            raise ValueError(f"{name}: {value!r} is not one of {allowed}")
        full[name] = value
    return full


def recommend(requirements: dict, guide: Guide | None = None) -> Answer:
    """The guide's answer to the stated requirements (unstated ones take their defaults: not needed)."""
    guide = guide or load()
    stated = check_requirements(requirements, guide)
    scores = {s: 0 for s in guide.systems}
    ruled_out: list[str] = []
    reasons: list[Reason] = []
    conditions: list[tuple[str | None, str]] = []
    for rule in guide.rules:
        if not rule.fires(stated):
            continue
        for system, weight in rule.weights.items():
            scores[system] += weight
            reasons.append(Reason(rule.id, system, f"{weight:+d}", rule.because or rule.condition, rule.evidence))
        for system in rule.rules_out:
            ruled_out.append(system)
            reasons.append(Reason(rule.id, system, "ruled out", rule.because or rule.condition, rule.evidence))
        if rule.condition:
            conditions.append((rule.about, rule.condition))
            if not rule.weights and not rule.rules_out:
                reasons.append(Reason(rule.id, rule.about, "condition", rule.condition, rule.evidence))
    order = {s: n for n, s in enumerate(guide.systems)}
    ranking = sorted(((s, v) for s, v in scores.items() if v > 0 and s not in ruled_out),
                     key=lambda item: (-item[1], order[item[0]]))
    answered = {s for s, _ in ranking}
    kept = [text for about, text in conditions if about is None or about in answered]
    reasons = [r for r in reasons if r.effect != "condition" or r.system is None or r.system in answered]
    return Answer(requirements=stated, choice=ranking[0][0] if ranking else None, ranking=tuple(ranking),
                  ruled_out=tuple(dict.fromkeys(ruled_out)), reasons=tuple(reasons),
                  conditions=tuple(dict.fromkeys(kept)))


def problems(guide: Guide | None = None) -> list[str]:
    """Everything wrong with the rules: a rule without links, a link to a cell that does not exist or does not
    assert (the claims ledger's checker), a system or requirement the guide does not know."""
    guide = guide or load()
    found = []
    for rule in guide.rules:
        if not rule.evidence:
            found.append(f"{rule.id}: no cell shows it (claims with cells, or evidence)")
        found += [f"{rule.id}: {e.cell}: {problem}" for e in rule.evidence if (problem := ledger.cell_problem(e.cell))]
        about = [rule.about] if rule.about else []
        found += [f"{rule.id}: unknown system {s!r}" for s in [*rule.weights, *rule.rules_out, *about]
                  if s not in guide.systems]
        if not (rule.weights or rule.rules_out or rule.condition):
            found.append(f"{rule.id}: neither moves a system nor states a condition")
        for name, wanted in rule.when.items():
            spec = guide.requirements.get(name)
            if spec is None:
                found.append(f"{rule.id}: unknown requirement {name!r}")
                continue
            allowed = (True, False) if spec["kind"] == "bool" else tuple(spec["options"])
            found += [f"{rule.id}: {name}: {w!r} is not one of {allowed}"
                      for w in (wanted if isinstance(wanted, list) else [wanted]) if w not in allowed]
    return found
