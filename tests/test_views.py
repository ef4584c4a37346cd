"""The live-view base: a plain model, a bounded loop, a text fallback; tested on the real stack."""
import time

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
