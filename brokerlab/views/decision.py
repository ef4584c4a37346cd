"""The decision guide of notebook 08a on screen.

- `AnswerView(requirements)`: the guide's answer as a view (facts, `live = False`): the choice, then one row per
  reason with what was measured and links to the cells that measured it. Shown like every view (`display()`).
- `DecisionGuide(requirements)`: the interactive form (ipywidgets checkboxes and dropdowns) above the same answer.
  Changing a control re-renders the answer inside the widget, under the cell that showed it. The answer is an
  `ipywidgets.HTML` whose value is the view's HTML, and the form's output also carries that HTML as `text/html`:
  when the cell ends it is frozen with the cell's last state (as every view), so nbconvert and the static site,
  which have no widget manager, show the final answer.
"""
from __future__ import annotations

import html

from .. import decision
from .base import CELLS, LiveView, in_kernel


class AnswerView(LiveView):
    title = "Decision guide"
    columns = ("for / against", "because", "measured", "shown by")
    live = False

    def __init__(self, requirements: dict | None = None):
        super().__init__()
        self.requirements = dict(requirements or {})

    def snapshot(self) -> dict:
        answer = decision.recommend(self.requirements)
        return {"answer": answer}

    def heading(self, model: dict) -> str:
        answer = model["answer"]
        asked = ", ".join(k if v is True else f"{k}: {v}" for k, v in self.stated(answer).items()) or "nothing yet"
        if answer.choice is None and not self.stated(answer):
            return f"You asked for {asked}. State a requirement to get an answer."
        if answer.choice is None:  # e.g. only "we already run Redis": a fact about you, not a need
            return (f"You asked for {asked}: no system gains on that alone. Add what the messages are for "
                    f"(replay, routing, a work queue, tasks, durability).")
        also = ", ".join(f"{s} ({v:+d})" for s, v in answer.ranking[1:])
        return (f"You asked for {asked} → {answer.choice}" + (f"; also fits: {also}" if also else "")
                + (f"; ruled out: {', '.join(answer.ruled_out)}" if answer.ruled_out else ""))

    @staticmethod
    def stated(answer: decision.Answer) -> dict:
        defaults = decision.load().defaults()
        return {k: v for k, v in answer.requirements.items() if v != defaults[k]}

    def rows(self, model: dict) -> list[tuple]:
        """One row per rule that fired: what it did to which systems, why, what was measured, which cells."""
        return [(label, because, " · ".join(dict.fromkeys(e.measured for e in evidence)),
                 ", ".join(str(e.cell) for e in evidence)) for label, because, evidence in _grouped(model["answer"])]

    def render_text(self, model: dict | None = None) -> str:
        model = self.model if model is None else model
        conditions = model["answer"].conditions if model else ()
        return super().render_text(model) + "".join(f"\n  condition: {c}" for c in conditions)

    def render_html(self, model: dict | None = None, state: str = "live", cell: int | None = None,
                    since: float = 0.0, checked_at: float | None = None) -> str:
        """The base table, with the 'shown by' column as links to the cells (notebook + cell id), then the
        conditions the answer holds under."""
        model = self.model if model is None else model
        base = super().render_html(model, state=state, cell=cell, since=since, checked_at=checked_at)
        for _, _, evidence in _grouped(model["answer"]):
            plain = html.escape(", ".join(str(e.cell) for e in evidence))
            links = ", ".join(f"<a href='{html.escape(e.href)}' target='_blank' rel='noopener' style='color:#0969da' "
                              f"title='{html.escape(e.measured)}'>{html.escape(e.cell.notebook[:3].rstrip('_'))}"
                              f"&nbsp;{html.escape(e.cell.cell_id)}</a>" for e in evidence)
            base = base.replace(f">{plain}</td>", f">{links}</td>", 1)
        conditions = "".join(f"<li>{html.escape(c)}</li>" for c in model["answer"].conditions)
        if conditions:
            base = base.replace("</table>", "</table><div><b>Conditions</b><ul style='margin:0'>"
                                f"{conditions}</ul></div>", 1)
        return base


def _grouped(answer: decision.Answer) -> list[tuple[str, str, list[decision.Evidence]]]:
    """(what the rule did, because, its evidence one per cell) for each rule that fired, in rule order."""
    rules: dict[str, list[decision.Reason]] = {}
    for reason in answer.reasons:
        rules.setdefault(reason.rule, []).append(reason)
    grouped = []
    for reasons in rules.values():
        label = ", ".join(f"{r.system} {r.effect}" if r.effect != "condition" else f"condition ({r.system or 'all'})"
                          for r in reasons)
        grouped.append((label, reasons[0].because, _by_cell(reasons[0])))
    return grouped


def _by_cell(reason: decision.Reason) -> list[decision.Evidence]:
    """The reason's evidence, one per cell (two claims may name the same cell)."""
    first: dict = {}
    for evidence in reason.evidence:
        first.setdefault(evidence.cell, evidence)
    return list(first.values())


class DecisionGuide:
    """The form: one control per requirement (from rules.yaml), the answer below it."""

    def __init__(self, requirements: dict | None = None):
        self.view = AnswerView(decision.check_requirements(requirements or {}))
        self.controls: dict = {}
        self._html = None
        self._cell: int | None = None
        self._state = "live"
        self._serial: int | None = None   # the cell (CELLS.serial) that shows the form

    @property
    def answer(self) -> decision.Answer:
        return decision.recommend(self.view.requirements)

    def set(self, **requirements) -> decision.Answer:
        """Change requirements (as a learner's click would) and re-render; returns the new answer."""
        self.view.requirements.update(decision.check_requirements({**self.stated(), **requirements}))
        for name, value in requirements.items():
            if name in self.controls and self.controls[name].value != value:
                self.controls[name].value = value  # the observer re-renders
        self._render()
        return self.answer

    def stated(self) -> dict:
        defaults = decision.load().defaults()
        return {k: v for k, v in self.view.requirements.items() if v != defaults[k]}

    def _render(self) -> None:
        self.view.refresh()  # the view itself is never shown: this only reads the answer
        if self._html is not None:
            self._html.value = self.view.render_html(self.view.model, state=self._state, cell=self._cell)
            self._output.update(self._bundle(), raw=True)

    def _bundle(self) -> dict:
        import ipywidgets

        box = self._box
        return {"application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                             "model_id": box.model_id},
                "text/plain": self.view.render_text(self.view.model),
                "text/html": self.view.render_html(self.view.model, state=self._state, cell=self._cell)} \
            if isinstance(box, ipywidgets.Widget) else {}

    def _build(self):
        import ipywidgets as w

        guide = decision.load()
        for name, spec in guide.requirements.items():
            value = self.view.requirements[name]
            layout = w.Layout(width="auto")
            if spec["kind"] == "bool":
                control = w.Checkbox(value=value, description=spec["label"], indent=False, layout=layout)
            else:
                control = w.Dropdown(options=spec["options"], value=value, description=spec["label"],
                                     style={"description_width": "initial"}, layout=layout)
            control.observe(lambda change, name=name: self._changed(name, change["new"]), names="value")
            self.controls[name] = control
        bools = [c for n, c in self.controls.items() if guide.requirements[n]["kind"] == "bool"]
        choices = [c for n, c in self.controls.items() if guide.requirements[n]["kind"] != "bool"]
        self._html = w.HTML()
        self._box = w.VBox([w.HBox([w.VBox(bools), w.VBox(choices)]), self._html])

    def _changed(self, name: str, value) -> None:
        self.view.requirements[name] = value
        self._render()

    def display(self) -> "DecisionGuide":
        """Show the form and its answer under the running cell (outside a kernel: the answer's text)."""
        self.view.refresh()  # the view itself is never shown: this only reads the answer
        if not in_kernel():
            print(self.view.render_text())
            return self
        from IPython.display import display

        CELLS.install()
        if self._serial == CELLS.serial:  # shown by this cell already (e.g. `guide.display()` as its last line)
            self._render()
            return self
        self._build()  # new widgets: a form shown by an earlier cell keeps its own
        self._serial, self._state, self._cell = CELLS.serial, "live", None
        CELLS.live.append(self)  # frozen with the others when the cell ends: freeze(cell) below
        self._html.value = self.view.render_html(self.view.model, state=self._state, cell=self._cell)
        self._output = display(self._bundle(), raw=True, display_id=True)
        return self

    def freeze(self, cell: int | None = None) -> None:
        """The cell ended: its output now says which cell it belongs to. Later clicks still re-render the answer
        in this cell's widget (that is the form's job), never anywhere else."""
        self._state, self._cell = "final", cell
        self._render()

    def _ipython_display_(self):
        self.display()


class QueueComparison(LiveView):
    """The same work-queue job on each broker (brokerlab.work_queues), one column per system: the measured
    properties, one row each. Facts of finished runs (`live = False`)."""
    title = "One work-queue job, three brokers (measured above)"
    live = False

    def __init__(self, results: dict, poison: dict):
        super().__init__()
        self.results, self.poison = results, poison
        self.columns = ("property", *(r.system for r in results.values()))

    def snapshot(self) -> dict:
        return {"results": self.results, "poison": self.poison}

    def rows(self, model: dict) -> list[tuple]:
        results, poison = list(model["results"].values()), model["poison"]
        return [
            ("every task done", *(r.every_task_done for r in results)),
            ("a task done twice", *(bool(r.done_twice) for r in results)),
            ("held tasks redelivered", *(r.redelivered for r in results)),
            ("their delivery count", *(max(r.redelivery_counts.get(t, 0) for t in r.held) for r in results)),
            ("redelivered after kill (s)", *(r.recovered_after for r in results)),
            ("per-message ack", *(r.per_message_ack for r in results)),
            ("completion order = publish order", *(r.inversions == 0 for r in results)),
            ("replay afterwards (tasks)", *(r.replayed for r in results)),
            ("poison deliveries (limit 3)", *(len(poison[k]) for k in model["results"])),
            ("broker stops a poison task", *(poison_stopped(poison[k]) for k in model["results"])),
        ]


def poison_stopped(counts: list[int]) -> bool:
    """The broker stopped delivering the poison task before the consumer's own bound."""
    from ..work_queues import POISON_BOUND
    return len(counts) < POISON_BOUND
