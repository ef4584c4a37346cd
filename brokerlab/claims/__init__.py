"""The claims ledger: the seed guides' claims (C01-C99), each with its final verdict and the notebook cells
whose asserts show it (`ledger.yaml`, next to this file), checked against the notebooks and rendered as a table
into README.md (`python -m brokerlab claims`).
"""
from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

LEDGER = Path(__file__).with_name("ledger.yaml")
REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"
README = REPO_ROOT / "README.md"
VERDICTS = ("true", "qualified", "outdated", "false")
CLAIM_IDS = tuple(f"C{n:02d}" for n in range(1, 100))
BEGIN = "<!-- BEGIN CLAIMS LEDGER: generated from brokerlab/claims/ledger.yaml by `python -m brokerlab claims` -->"
END = "<!-- END CLAIMS LEDGER -->"


@dataclass(frozen=True)
class CellRef:
    notebook: str   # the notebook's file stem, in notebooks/
    cell_id: str    # nbformat 4.5 cell id

    @classmethod
    def parse(cls, text: str) -> "CellRef":
        notebook, _, cell_id = text.partition("#")
        if not notebook or not cell_id:
            raise ValueError(f"a cell reference is '<notebook stem>#<cell id>', got {text!r}")
        return cls(notebook, cell_id)

    @property
    def path(self) -> Path:
        return NOTEBOOKS / f"{self.notebook}.ipynb"

    def __str__(self) -> str:
        return f"{self.notebook}#{self.cell_id}"


@dataclass(frozen=True)
class Claim:
    id: str
    system: str
    claim: str
    seed: str            # the seed's first verdict
    verdict: str         # the final verdict
    source: str          # "notebook": recorded in a notebook's seed-claims section; "seed": the seed's stands
    reason: str
    shown_by: tuple[CellRef, ...]
    not_shown: str | None

    @property
    def shown(self) -> bool:
        return bool(self.shown_by)


def load(path: Path = LEDGER) -> list[Claim]:
    """Every claim of the ledger, in id order. Raises ValueError on a malformed entry."""
    data = yaml.safe_load(path.read_text())
    claims = []
    for claim_id, entry in sorted(data.items()):
        try:
            claims.append(Claim(
                id=claim_id, system=entry["system"], claim=entry["claim"], seed=entry["seed"],
                verdict=entry["verdict"], source=entry["from"], reason=entry["reason"],
                shown_by=tuple(CellRef.parse(ref) for ref in entry.get("shown_by", ())),
                not_shown=entry.get("not_shown")))
        except KeyError as missing:
            raise ValueError(f"{claim_id}: missing field {missing}") from None
    return claims


def seed_verdicts(seed_claims_md: Path) -> dict[str, str]:
    """{claim id: first verdict} from the claims table of SEED-CLAIMS.md."""
    rows = re.findall(r"^\| (C\d\d) \|(?:[^|\n]*\|){3} *(\w+) *\|", seed_claims_md.read_text(), re.MULTILINE)
    return dict(rows)


@lru_cache(maxsize=None)
def _cells(notebook: Path) -> dict[str, dict]:
    return {cell["id"]: cell for cell in json.loads(notebook.read_text())["cells"] if "id" in cell}


def has_assert(source: str) -> bool:
    """Whether the cell's code holds an `assert` statement (IPython syntax such as `!cmd` understood;
    an `assert` in a comment or a string does not count)."""
    from IPython.core.inputtransformer2 import TransformerManager

    tree = ast.parse(TransformerManager().transform_cell(source))
    return any(isinstance(node, ast.Assert) for node in ast.walk(tree))


def problems(claims: list[Claim] | None = None) -> list[str]:
    """Everything wrong with the ledger: missing or unknown claims, bad verdicts, entries with no evidence and
    no reason, references to notebooks or cells that do not exist, referenced cells without an assert."""
    claims = load() if claims is None else claims
    found = []
    ids = [c.id for c in claims]
    found += [f"{i}: missing from the ledger" for i in CLAIM_IDS if i not in ids]
    found += [f"{i}: not a seed claim id" for i in ids if i not in CLAIM_IDS]
    for c in claims:
        found += [f"{c.id}: {field} {value!r} is not one of {VERDICTS}"
                  for field, value in (("verdict", c.verdict), ("seed", c.seed)) if value not in VERDICTS]
        if c.source not in ("notebook", "seed"):
            found.append(f"{c.id}: from {c.source!r} is neither 'notebook' nor 'seed'")
        if c.source == "notebook" and not c.shown:
            found.append(f"{c.id}: a verdict from a notebook needs the cells that show it")
        if not c.shown and not c.not_shown:
            found.append(f"{c.id}: neither shown_by nor a not_shown reason")
        found += [f"{c.id}: {ref}: {problem}" for ref in c.shown_by if (problem := cell_problem(ref))]
    return found


def cell_problem(ref: CellRef) -> str | None:
    """Why the referenced cell is no evidence (no such notebook, no such cell, no assert in it), or None.
    Shared by every table that links claims to cells (this ledger, the decision guide's rules)."""
    if not ref.path.exists():
        return f"no notebook {ref.path.relative_to(REPO_ROOT)}"
    cell = _cells(ref.path).get(ref.cell_id)
    if cell is None:
        return "no cell with this id"
    if cell["cell_type"] != "code" or not has_assert("".join(cell["source"])):
        return "the cell has no assert, so it is no evidence"
    return None


def _cell_link(ref: CellRef) -> str:
    return f"[{ref.notebook[:3].rstrip('_')} `{ref.cell_id}`](notebooks/{ref.notebook}.ipynb)"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render(claims: list[Claim] | None = None) -> str:
    """The ledger as a markdown section: counts, then one table row per claim."""
    claims = load() if claims is None else claims
    counts = Counter(c.verdict for c in claims)
    shown = sum(c.shown for c in claims)
    lines = [
        f"{len(claims)} claims: " + ", ".join(f"**{counts[v]}** {v}" for v in VERDICTS) + ". "
        f"{shown} are shown by notebook cells whose asserts check them ({sum(c.shown and bool(c.not_shown) for c in claims)}"
        f" of those in part); {len(claims) - shown} are not shown locally, with the reason. "
        "A verdict \"from the seed\" is the seed's first verdict, which no notebook records (yet).",
        "",
        "| id | system | claim | verdict | why | shown by |",
        "|---|---|---|---|---|---|",
    ]
    for c in claims:
        verdict = f"**{c.verdict}**" + ("" if c.verdict == c.seed else f" (seed: {c.seed})")
        if c.source == "seed":
            verdict += " (from the seed)"
        evidence = ", ".join(_cell_link(ref) for ref in c.shown_by)
        if c.not_shown:
            evidence += ("; " if evidence else "") + f"not shown locally: {c.not_shown}"
        lines.append(f"| {c.id} | {_escape(c.system)} | {_escape(c.claim)} | {verdict} | {_escape(c.reason)} "
                     f"| {_escape(evidence)} |")
    return "\n".join(lines) + "\n"


def readme_with_ledger(readme: str, section: str) -> str:
    """README text with the generated section between the markers replaced by `section`."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md lacks the markers {BEGIN!r} ... {END!r}")
    return readme[:start + len(BEGIN)] + "\n" + section + readme[end:]


def update_readme(check_only: bool = False, readme: Path = README) -> bool:
    """Regenerate README's ledger section; returns whether it was stale (with check_only, only reports)."""
    text = readme.read_text()
    fresh = readme_with_ledger(text, render())
    if fresh != text and not check_only:
        readme.write_text(fresh)
    return fresh != text
