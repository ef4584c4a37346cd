"""The live-view base: a plain model, a bounded loop, a text fallback; tested on the real stack."""
import time

import pytest

from brokerlab import run_name
from brokerlab.clients import redis_client
from brokerlab.views import LiveView, StackView


class ListLength(LiveView):
    """A minimal view of one Redis list, enough to test the base class against a real broker."""
    title = "list"
    columns = ("key", "length")

    def __init__(self, key):
        super().__init__()
        self.key = key
        self.redis = redis_client()

    def snapshot(self):
        return {"length": self.redis.llen(self.key)}

    def rows(self, model):
        return [(self.key, model["length"])]


def test_watch_stops_when_the_condition_holds():
    key = run_name("view")
    view = ListLength(key)
    r = redis_client()
    try:
        r.lpush(key, *range(3))
        started = time.monotonic()
        model = view.watch(seconds=10, until=lambda: view.model["length"] == 3, interval=0.05)
        assert model == {"length": 3}
        assert time.monotonic() - started < 2
    finally:
        r.delete(key)


def test_watch_always_ends_at_its_time_limit_and_keeps_history():
    view = ListLength(run_name("view"))
    started = time.monotonic()
    view.watch(seconds=0.5, until=lambda: False, interval=0.1)
    assert 0.4 < time.monotonic() - started < 2
    times, lengths = view.series(lambda m: m["length"])
    assert len(times) >= 4 and set(lengths) == {0}
    assert times == sorted(times)


def test_text_and_html_render_the_model(capsys):
    view = ListLength("bl-some-key")
    view.model = {"length": 7}
    text = view.render_text()
    assert "bl-some-key" in text and "7" in text and "length" in text
    assert "<table" in view.render_html() and "bl-some-key" in view.render_html()
    view.watch(seconds=0, interval=0)  # headless under the test runner: the final state is printed
    assert "bl-some-key" in capsys.readouterr().out


def test_stack_view_sees_every_broker_up():
    view = StackView()
    model = view.watch(seconds=0)
    assert set(model) == {"redis", "rabbitmq", "kafka"}
    assert all(m["up"] for m in model.values())
    assert "Redis 7" in model["redis"]["answer"] or "Redis 8" in model["redis"]["answer"]
    assert "queues" in model["rabbitmq"]["holding"] and "topics" in model["kafka"]["holding"]


# --- outputs belong to the cell that made them: checked in a real kernel (nbclient), as JupyterLab would run it ---
def _run_in_kernel(cells: list[str], headless: bool) -> list:
    import os

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env_headless = os.environ.pop("BROKERLAB_HEADLESS", None)
    if headless:
        os.environ["BROKERLAB_HEADLESS"] = "1"
    try:
        NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    finally:
        os.environ.pop("BROKERLAB_HEADLESS", None)
        if env_headless is not None:
            os.environ["BROKERLAB_HEADLESS"] = env_headless
    return nb.cells


def _views_in(cell) -> list[str]:
    return [o["data"]["text/html"] for o in cell.outputs
            if o.get("output_type") == "display_data" and "brokerlab-view" in o.get("data", {}).get("text/html", "")]


KERNEL_SETUP = '''
from brokerlab.clients import redis_client
from brokerlab.views import LiveView
class ListLength(LiveView):
    title = "list"
    columns = ("key", "length")
    bar_columns = ("length",)
    chart = {"length": lambda m: m["length"]}
    def __init__(self, key):
        super().__init__()
        self.key, self.redis = key, redis_client()
    def snapshot(self):
        return {"length": self.redis.llen(self.key)}
    def rows(self, model):
        return [(self.key, model["length"])]
r = redis_client()
'''


@pytest.mark.parametrize("headless", [False, True], ids=["live", "headless"])
def test_each_cell_shows_its_own_state_under_itself(headless):
    key = run_name("view-cells")
    cells = _run_in_kernel([
        KERNEL_SETUP + f"key = {key!r}\nview = ListLength(key)\nview.display()",        # 1: shows length 0
        "r.rpush(key, 'a', 'b', 'c')\nview.watch(seconds=5, until=lambda: view.model['length'] == 3, interval=0.05)",
        "r.rpush(key, 'd')\nview.refresh()\nview.refresh()",                            # 3: shown before: shows 4
        "r.delete(key)\nquiet = ListLength(key)\nquiet.refresh()",                      # 4: never shown: no output
        "view.refresh(); view.display(); view",                                         # 5: one output, not three
    ], headless=headless)
    shown = [_views_in(c) for c in cells]
    assert [len(s) for s in shown] == [1, 1, 1, 0, 1]
    for n, (outputs, length) in enumerate(zip(shown, [0, 3, 4, None, 0]), start=1):
        if length is None:
            continue
        html = outputs[0]
        assert f">{length}</span>" in html, (n, html)           # the state this cell saw, not a later one
        assert f"data-cell='{n}'" in html and "data-view-state='final'" in html
    assert "<polyline" in shown[1][0]  # the watch cell charts its own history


def test_a_bar_is_only_drawn_for_quantities_and_scaled_to_its_column():
    class Table(LiveView):
        columns = ("name", "partition", "lag")
        bar_columns = ("lag",)

        def snapshot(self):
            return {}

        def rows(self, model):
            return [("bl-orders-1763870000-3fa2", 0, 60), ("b", 1, 40), ("c", 2, 0)]

    page = Table().render_html({"x": 1})
    assert page.count("background:#4a90d9") == 2        # 60 and 40 get bars, 0 none, partitions never
    assert "width:70px" in page and "width:47px" in page  # scaled to the column's largest value (60)
    for number in (">60<", ">40<", ">0<", ">1<", ">2<"):
        assert number in page                            # numbers are always shown
    assert "orders…3fa2" in page and "title='bl-orders-1763870000-3fa2'" in page
