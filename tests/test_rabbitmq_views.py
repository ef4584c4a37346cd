"""ExchangeGraph reads exchanges, bindings and queue counts from the management API of the test stack."""
import pika
import pytest

import brokerlab as bl
from brokerlab import rabbitmq_tools as rt
from brokerlab.clients import rabbit_connection
from brokerlab.views.rabbitmq import ExchangeGraph


@pytest.fixture
def topology():
    run = bl.run_name("test-graph")
    connection = rabbit_connection()
    channel = connection.channel()
    channel.exchange_declare(f"{run}.logs", "direct")
    channel.exchange_declare(f"{run}.all", "fanout")
    channel.exchange_declare(f"{run}.hdr", "headers")
    for queue in ("errors", "audit", "lonely"):
        channel.queue_declare(f"{run}.{queue}", durable=True)
    channel.queue_bind(f"{run}.errors", f"{run}.logs", "error")
    channel.queue_bind(f"{run}.audit", f"{run}.all")
    channel.queue_bind(f"{run}.audit", f"{run}.hdr", arguments={"x-match": "all", "k": "v"})
    for _ in range(3):
        channel.basic_publish(f"{run}.logs", "error", b"boom")
    channel.basic_publish(f"{run}.all", "", b"everyone", pika.BasicProperties(delivery_mode=2))
    yield run, channel
    connection.close()
    rt.delete_run(run)


def test_the_model_has_bindings_and_live_counts(topology):
    run, channel = topology
    graph = ExchangeGraph(run)
    graph.watch(seconds=15, until=lambda: graph.ready(f"{run}.errors") == 3 and graph.ready(f"{run}.audit") == 1)
    assert graph.ready(f"{run}.errors") == 3 and graph.ready(f"{run}.audit") == 1
    assert (f"{run}.logs", "error", f"{run}.errors") in graph.edges()
    assert graph.model["exchanges"] == {f"{run}.logs": "direct", f"{run}.all": "fanout", f"{run}.hdr": "headers"}
    assert any(e[0] == f"{run}.hdr" and '"x-match":"all"' in e[1] for e in graph.edges())
    held = rt.get_all(channel, f"{run}.errors", limit=2, ack=False)
    graph.watch(seconds=15, until=lambda: graph.unacked(f"{run}.errors") == 2)
    assert graph.unacked(f"{run}.errors") == 2 and graph.ready(f"{run}.errors") == 1 and len(held) == 2


def test_rows_and_rendering_follow_the_view_rules(topology):
    run, _ = topology
    graph = ExchangeGraph(run)
    graph.refresh()
    rows = graph.rows(graph.model)
    assert len(graph.columns) <= 6 and all(len(r) == len(graph.columns) for r in rows)
    assert ("logs (direct)", "error", "errors") == rows[[r[0] for r in rows].index("logs (direct)")][:3]
    assert ("all (fanout)", "(any key)", "audit") in [r[:3] for r in rows]
    assert ("(default exchange)", "lonely", "lonely") in [r[:3] for r in rows]   # no binding of its own
    text = graph.render_text()
    assert run not in text.split("\n", 1)[1]          # rows show names without the per-run prefix
    assert set(graph.bar_columns) <= {"ready", "unacked"}
    html = graph.render_html()
    assert "<table" in html and "errors" in html
