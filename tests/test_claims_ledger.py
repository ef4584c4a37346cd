"""The claims ledger (brokerlab/claims/ledger.yaml): every seed claim has a verdict, and every cell it points at
still exists and still asserts something; README.md's table is generated from it. No broker needed."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from brokerlab import claims

SEED_CLAIMS = Path(os.environ.get("BROKERLAB_SEED_CLAIMS", "/work/shared/SEED-CLAIMS.md"))


def test_the_ledger_holds_every_claim_once_with_a_known_verdict():
    ledger = claims.load()
    assert [c.id for c in ledger] == list(claims.CLAIM_IDS)
    assert {c.verdict for c in ledger} <= set(claims.VERDICTS)
    assert all(c.reason.strip() for c in ledger)
    assert all(c.shown_by or c.not_shown for c in ledger)


@pytest.mark.skipif(not SEED_CLAIMS.exists(), reason=f"{SEED_CLAIMS} is not on this machine (BROKERLAB_SEED_CLAIMS)")
def test_the_ledger_matches_seed_claims_md():
    seed = claims.seed_verdicts(SEED_CLAIMS)
    assert len(seed) >= 99
    ledger = {c.id: c for c in claims.load()}
    assert sorted(seed) == sorted(ledger), "a claim of SEED-CLAIMS.md is missing from the ledger, or one is extra"
    assert {i: c.seed for i, c in ledger.items()} == seed, "the ledger's `seed` must be SEED-CLAIMS.md's verdict"


def test_every_referenced_cell_exists_and_asserts():
    assert claims.problems() == []


def test_the_readme_table_is_generated_from_the_ledger():
    assert not claims.update_readme(check_only=True), "README.md is stale: run `python -m brokerlab claims`"
    readme = claims.README.read_text()
    assert readme.count(claims.BEGIN) == readme.count(claims.END) == 1
    assert all(f"| {i} |" in readme for i in claims.CLAIM_IDS)


def _code_cell_without_assert() -> claims.CellRef:
    for notebook in sorted(claims.NOTEBOOKS.glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] == "code" and not claims.has_assert("".join(cell["source"])):
                return claims.CellRef(notebook.stem, cell["id"])
    raise AssertionError("every code cell asserts: pick another kind of bad reference")


def test_the_checker_catches_each_kind_of_bad_entry():
    good = claims.load()
    shown = next(c for c in good if c.shown_by)
    notebook = shown.shown_by[0].notebook
    markdown = next(claims.CellRef(notebook, cell["id"]) for cell in json.loads(shown.shown_by[0].path.read_text())
                    ["cells"] if cell["cell_type"] == "markdown")

    def with_entry(entry):
        return [entry if c.id == entry.id else c for c in good]

    broken = {
        "missing from the ledger": good[1:],
        "is not one of": with_entry(replace(shown, verdict="mostly true")),
        "no notebook": with_entry(replace(shown, shown_by=(claims.CellRef("99_gone", "x"),))),
        "no cell with this id": with_entry(replace(shown, shown_by=(claims.CellRef(notebook, "no-such-id"),))),
        "has no assert": with_entry(replace(shown, shown_by=(_code_cell_without_assert(),))),
        "is no evidence": with_entry(replace(shown, shown_by=(markdown,))),
        "neither shown_by nor": with_entry(replace(shown, shown_by=(), not_shown=None, source="seed")),
        "needs the cells": with_entry(replace(shown, shown_by=(), not_shown="later", source="notebook")),
    }
    for expected, ledger in broken.items():
        found = claims.problems(ledger)
        assert any(expected in problem for problem in found), (expected, found)


def test_has_assert_reads_code_not_text():
    assert claims.has_assert("x = 1\nassert x == 1")
    assert claims.has_assert("pong = !redis-cli ping\nassert pong == ['PONG']")   # IPython syntax is fine
    assert not claims.has_assert("# assert nothing\nprint('assert')")
    assert not claims.has_assert("try:\n    f()\n    raise AssertionError('expected')\nexcept ValueError:\n    pass")
