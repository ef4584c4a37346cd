"""`python -m brokerlab site`: the course readable without running it.

Executes every lesson notebook and every lab solution (quick mode, against the running stack, a few at a time:
they use per-run names) and writes a static HTML site: one page per notebook with its outputs, plots and the final
state of every live view embedded, and an index in course order. The pages load nothing from the network.

    python -m brokerlab site                 # -> build/site/index.html
    python -m brokerlab site --jobs 3 --out /tmp/site

A notebook that fails still gets its page (with the error shown); the command then exits with 1.
"""
from __future__ import annotations

import html
import json
import multiprocessing
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .stack.paths import REPO_ROOT

DEFAULT_OUT = REPO_ROOT / "build" / "site"
CELL_TIMEOUT = 120  # seconds, as nbval's per-cell limit in the test suite
_TEMPLATE = """{#- JupyterLab's look, without require.js, MathJax and Mermaid from a CDN: the pages work offline -#}
{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


@dataclass
class Page:
    source: str                     # path relative to the repo
    html_name: str
    title: str = ""
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    views: int = 0                  # live-view outputs on the page
    plots: int = 0


def course_notebooks(root: Path = REPO_ROOT) -> list[Path]:
    """Lessons in course order (00, 01, ..., 05a, 05b, ...), then the lab solutions."""
    lessons = sorted((root / "notebooks").glob("[0-9][0-9]*.ipynb"))
    labs = sorted((root / "labs").glob("*_solution.ipynb"))
    return lessons + labs


def kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    env["BROKERLAB_QUICK"] = "1"      # small counts, same code paths
    env["BROKERLAB_HEADLESS"] = "1"   # nobody watches live: each view output is written once, with its cell's state
    env.pop("MPLBACKEND", None)       # the kernel's inline backend, so plots are embedded
    return env


def execute(path: str, out_dir: str) -> dict:
    """Run one notebook in a fresh kernel (in its own folder, as JupyterLab would) and write its page."""
    import nbformat
    from nbclient import NotebookClient

    source = Path(path)
    nb = nbformat.read(source, as_version=4)
    started = time.monotonic()
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=True,
                            store_widget_state=True, resources={"metadata": {"path": str(source.parent)}})
    try:
        client.execute(env=kernel_env())
    except Exception as exc:  # a dead kernel or a cell timeout: keep what ran, say why
        nb.cells.append(nbformat.v4.new_markdown_cell(f"**The site build stopped here:** `{type(exc).__name__}: "
                                                      f"{str(exc)[:300]}`"))
    seconds = time.monotonic() - started
    page = Page(source=str(source.relative_to(REPO_ROOT)) if source.is_relative_to(REPO_ROOT) else source.name,
                html_name=source.stem + ".html", title=notebook_title(nb, source.stem), seconds=seconds)
    static_widgets(nb)
    for n, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if output.get("output_type") == "error":
                page.errors.append(f"cell {n}: {output.get('ename')}: {output.get('evalue', '')[:200]}")
            page.views += "brokerlab-view" in data.get("text/html", "")
            page.plots += "image/png" in data
    out = Path(out_dir)
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out / "notebooks" / source.name)  # the executed notebook, to download
    (out / page.html_name).write_text(to_html(nb), encoding="utf-8")
    return page.__dict__


def notebook_title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    return fallback


def static_widgets(nb) -> None:
    """ipywidgets need a widget manager (loaded from a CDN) to render in a static page: replace each widget output
    by its final HTML/text from the stored widget state, so the page shows it offline."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            view = data.get("application/vnd.jupyter.widget-view+json")
            if not view:
                continue
            model = state.get(view.get("model_id"), {}).get("state", {})
            value = model.get("value")
            if isinstance(value, str) and model.get("_model_name") == "HTMLModel":
                data["text/html"] = value
            elif value is not None or model.get("description"):
                data["text/html"] = f"<pre>{html.escape(str(model.get('description') or ''))} " \
                                    f"{html.escape(str(value))}</pre>"
            else:
                data.setdefault("text/html", f"<pre>{html.escape(data.get('text/plain', 'widget'))}</pre>")
            del data["application/vnd.jupyter.widget-view+json"]
    nb.metadata.pop("widgets", None)


def to_html(nb) -> str:
    import jinja2
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", extra_loaders=[jinja2.DictLoader({"brokerlab.html.j2": _TEMPLATE})],
                            template_file="brokerlab.html.j2", theme="light")
    body, _ = exporter.from_notebook_node(nb)
    nav = ("<nav style='font:14px sans-serif;padding:8px 0;border-bottom:1px solid #ddd;margin-bottom:8px'>"
           "<a href='index.html'>← brokerlab course index</a> · executed in quick mode by "
           "<code>python -m brokerlab site</code></nav>")
    return site_links(body.replace("<main>", "<main>" + nav, 1))


_NOTEBOOK_LINK = re.compile(r"""(href=["'])([0-9][0-9][a-z]?_[\w-]+)\.ipynb(?=[#"'])""")


def site_links(page: str) -> str:
    """Links from one lesson to another name the .ipynb (so they open in JupyterLab, at a cell with
    `#cell-id=...`); on the site that notebook's page is <stem>.html, whose cells carry the same ids."""
    return _NOTEBOOK_LINK.sub(r"\1\2.html", page)


def write_index(out: Path, pages: list[dict], seconds: float) -> None:
    rows = []
    for p in pages:
        status = (f"<span style='color:#cf222e'>{len(p['errors'])} error(s)</span>" if p["errors"]
                  else "<span style='color:#1a7f37'>ran clean</span>")
        rows.append(f"<tr><td><a href='{html.escape(p['html_name'])}'>{html.escape(p['title'])}</a></td>"
                    f"<td><code>{html.escape(p['source'])}</code></td><td style='white-space:nowrap'>{status}</td>"
                    f"<td style='text-align:right'>{p['views']}</td><td style='text-align:right'>{p['plots']}</td>"
                    f"<td style='text-align:right'>{p['seconds']:.0f} s</td></tr>")
    stamp = time.strftime("%Y-%m-%d %H:%M %Z")
    (out / "index.html").write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>brokerlab: the course</title>
<style>body{{font:15px/1.5 sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}</style>
</head><body>
<h1>brokerlab: the course, executed</h1>
<p>Every notebook run top to bottom in quick mode (<code>BROKERLAB_QUICK=1</code>) against real brokers on
{stamp}; each page shows the outputs, plots and the final state of each live view as its cell left it.
Run it yourself: <code>make lab</code>. Rebuild this site: <code>python -m brokerlab site</code>
(took {seconds:.0f} s).</p>
<table><thead><tr><th>notebook</th><th>file</th><th>run</th><th>views</th><th>plots</th><th>time</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
</body></html>
""", encoding="utf-8")
    (out / "site.json").write_text(json.dumps({"seconds": round(seconds, 1), "pages": pages}, indent=1))


def build_site(out: Path = DEFAULT_OUT, jobs: int = 2, notebooks: list[Path] | None = None) -> int:
    """Execute the notebooks `jobs` at a time and write the site; returns 0 when every notebook ran clean."""
    from . import stack
    from .health import probe

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if notebooks is None:
        notebooks = course_notebooks()
    else:  # a chosen few, still in course order (and any notebook from elsewhere after them)
        chosen = [Path(p).resolve() for p in notebooks]
        notebooks = [p for p in course_notebooks() if p in chosen] + [p for p in chosen if p not in course_notebooks()]
    started_stack = not all(r.ok for r in probe().values())
    if started_stack:
        stack.up()
    started = time.monotonic()
    try:
        with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(execute, str(p), str(out)) for p in notebooks]
            pages = []
            for path, future in zip(notebooks, futures):
                page = future.result()
                pages.append(page)
                print(f"  {page['source']:<50} {page['seconds']:5.0f} s  "
                      f"{'ERRORS: ' + '; '.join(page['errors']) if page['errors'] else 'ok'}", flush=True)
    finally:
        if started_stack and not os.environ.get("BROKERLAB_KEEP_STACK"):
            stack.down()
    seconds = time.monotonic() - started
    write_index(out, pages, seconds)
    print(f"brokerlab: site with {len(pages)} pages in {out / 'index.html'} ({seconds:.0f} s, {jobs} at a time)")
    return 1 if any(p["errors"] for p in pages) else 0
