"""`python -m brokerlab site` builds the course as static pages: every page has its outputs, its plots and
the final state of every live view, renders without a widget manager and loads nothing from the network."""
import json
import re
import subprocess
import sys
import time

import nbformat
import pytest

from brokerlab.site import course_notebooks
from brokerlab.stack.paths import REPO_ROOT

SHOWS_A_VIEW = re.compile(r"\.(watch\(|display\(\))")
PLOTS = re.compile(r"plt\.show\(\)|\.plot\(")

# `make site` executes the whole course (a third run of every notebook, over 5 minutes); the suite already runs each
# notebook twice under nbval, so here the site is built from a sample that holds every kind of output a page must
# render statically: live views, a matplotlib plot, an ipywidget, a lab solution. test_the_sample_covers_every_kind
# keeps it representative as notebooks change.
SAMPLE = [REPO_ROOT / p for p in ("notebooks/00_orientation.ipynb", "notebooks/01_redis_lists.ipynb",
                                  "notebooks/08a_choosing.ipynb", "labs/00_first_messages_solution.ipynb")]
WIDGET = re.compile(r"ipywidgets|DecisionGuide\(")  # ipywidgets used directly, or the course's form (08a)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "brokerlab", "site", "--out", str(out), "--jobs", "2",
                             *map(str, reversed(SAMPLE))], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    print(f"site built in {time.monotonic() - started:.0f} s\n{result.stdout[-3000:]}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_the_sample_covers_every_kind_of_output():
    sources = {p: "\n".join(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")
               for p in course_notebooks()}
    assert set(SAMPLE) <= set(sources), "a sampled notebook no longer exists"
    kinds = {"a live view": SHOWS_A_VIEW, "a plot": PLOTS, "an ipywidget": WIDGET}
    for kind, pattern in kinds.items():
        if any(pattern.search(src) for src in sources.values()):
            assert any(pattern.search(sources[p]) for p in SAMPLE), f"no sampled notebook has {kind}"
    assert any(p.parent.name == "labs" for p in SAMPLE)


@pytest.mark.timeout(600)
def test_the_index_lists_the_notebooks_in_course_order(site):
    built = json.loads((site / "site.json").read_text())
    expected = [str(p.relative_to(REPO_ROOT)) for p in course_notebooks() if p in SAMPLE]
    assert [p["source"] for p in built["pages"]] == expected
    index = (site / "index.html").read_text()
    positions = [index.index(f"href='{p['html_name']}'") for p in built["pages"]]
    assert positions == sorted(positions)


@pytest.mark.parametrize("notebook", SAMPLE, ids=lambda p: p.name)
def test_every_page_has_its_outputs_views_and_plots(site, notebook):
    nb = nbformat.read(site / "notebooks" / notebook.name, as_version=4)
    page = (site / f"{notebook.stem}.html").read_text()
    problems, views, plots = [], 0, 0
    for n, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        outputs = cell.outputs
        if cell.execution_count is None:
            problems.append(f"cell {n} did not run")
        problems += [f"cell {n}: {o.ename}: {o.evalue[:100]}" for o in outputs if o.output_type == "error"]
        html_outputs = [o.data.get("text/html", "") for o in outputs if "data" in o]
        shown = [h for h in html_outputs if "brokerlab-view" in h]
        views += len(shown)
        if SHOWS_A_VIEW.search(cell.source) and not shown:
            problems.append(f"cell {n} shows a view but its output has none")
        problems += [f"cell {n}: a view output not frozen with its cell's state" for h in shown
                     if "data-view-state='final'" not in h]
        images = [o for o in outputs if "data" in o and "image/png" in o.data]
        plots += len(images)
        if PLOTS.search(cell.source) and not images:
            problems.append(f"cell {n} plots but its output has no image")
    assert not problems, f"{notebook.name}:\n  " + "\n  ".join(problems)
    assert len(re.findall(r"class=[\"']brokerlab-view[\"']", page)) == views  # every view output is on the page
    assert page.count("data:image/png;base64") >= plots            # every plot is embedded
    for unrendered in ("application/vnd.jupyter.widget-view+json", "Loading widget", "Error displaying widget"):
        assert unrendered not in page
    assert not re.findall(r"<script[^>]+src=['\"]https?:", page), "a page must load nothing from the network"


def test_an_ipywidget_output_becomes_its_final_html():
    from brokerlab.site import static_widgets

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("w")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "text/plain": "HTML(value='...')", "application/vnd.jupyter.widget-view+json": {"model_id": "m1"}})]
    nb.cells.append(cell)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {
        "m1": {"state": {"_model_name": "HTMLModel", "value": "<b>3 tasks done</b>"}}}}}
    static_widgets(nb)
    assert cell.outputs[0]["data"]["text/html"] == "<b>3 tasks done</b>"
    assert "application/vnd.jupyter.widget-view+json" not in cell.outputs[0]["data"]
    assert "widgets" not in nb.metadata
