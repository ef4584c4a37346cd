"""The decision guide (brokerlab.decision, rules.yaml; brokerlab.views.decision): answers, links to cells that exist
and assert (checked with the claims ledger's checker), and the form's output as JupyterLab, nbconvert and the static
site see it. No broker needed."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from brokerlab import claims, decision
from brokerlab.views.decision import AnswerView, DecisionGuide


def test_every_rule_links_to_cells_that_exist_and_assert():
    guide = decision.load()
    assert guide.rules and all(rule.evidence for rule in guide.rules)
    assert decision.problems() == []


def test_the_checker_catches_bad_links_and_unknown_names():
    guide = decision.load()
    rule = guide.rules[0]
    markdown = next(claims.CellRef("08a_choosing", c["id"]) for c in json.loads(
        (claims.NOTEBOOKS / "08a_choosing.ipynb").read_text())["cells"] if c["cell_type"] == "markdown")
    broken = {
        "no cell with this id": replace(rule, evidence=(decision.Evidence(claims.CellRef(
            "05a_kafka_partitions_and_groups", "no-such-cell"), "x"),)),
        "no notebook": replace(rule, evidence=(decision.Evidence(claims.CellRef("99_gone", "x"), "x"),)),
        "is no evidence": replace(rule, evidence=(decision.Evidence(markdown, "x"),)),
        "no cell shows it": replace(rule, evidence=()),
        "unknown system": replace(rule, weights={"ZeroMQ": 1}),
        "unknown requirement": replace(rule, when={"blockchain": True}),
        "is not one of": replace(rule, when={"ordering": "total"}),
        "neither moves a system": replace(rule, weights={}, rules_out=(), condition=None),
    }
    for expected, bad in broken.items():
        found = decision.problems(replace(guide, rules=(bad, *guide.rules[1:])))
        assert any(expected in problem for problem in found), (expected, found)


def test_the_seed_flowchart_cases():
    assert decision.recommend({"replay": True, "ordering": "per key"}).choice == "Kafka"
    assert decision.recommend({"routing": True, "replies": True}).choice == "RabbitMQ"
    redis = decision.recommend({"have_redis": True, "durability": "may lose some on a crash"})
    assert redis.choice == "Redis"
    assert any("BLMOVE" in c for c in redis.conditions)
    assert decision.recommend({"tasks": True}).choice == "Celery"


def test_node_loss_rules_redis_out_and_its_conditions_go_with_it():
    answer = decision.recommend({"have_redis": True, "durability": "survive losing a node", "replay": True})
    assert "Redis" in answer.ruled_out and "Redis" not in answer.systems
    assert not any("Redis' RAM" in c or "MAXLEN" in c for c in answer.conditions), answer.conditions
    assert any(r.effect == "ruled out" and r.system == "Redis" for r in answer.reasons)


def test_every_reason_carries_its_measurement_and_links():
    answer = decision.recommend({"replay": True, "work_queue": True, "throughput": "over 100k/s"})
    assert answer.reasons
    for reason in answer.reasons:
        assert reason.evidence and all(e.measured and e.href.endswith(f"#cell-id={e.cell.cell_id}")
                                       for e in reason.evidence)


def test_nothing_asked_gives_no_choice_and_typos_are_refused():
    assert decision.recommend({}).choice is None
    with pytest.raises(ValueError, match="unknown requirement"):
        decision.recommend({"replays": True})
    with pytest.raises(ValueError, match="not one of"):
        decision.recommend({"ordering": "global"})


def test_the_answer_view_links_each_reason_to_its_cells():
    view = AnswerView({"replay": True, "ordering": "per key"})
    view.refresh()
    html = view.render_html()
    assert "brokerlab-view" in html and "→ Kafka" in html
    assert "href='05a_kafka_partitions_and_groups.ipynb#cell-id=cell-36'" in html
    text = view.render_text()
    assert "Kafka" in text and "05a_kafka_partitions_and_groups#cell-36" in text


def test_the_form_changes_its_answer_outside_a_kernel(capsys):
    guide = DecisionGuide({"replay": True})
    guide.display()
    assert "→ Kafka" in capsys.readouterr().out
    assert guide.set(routing=True, replies=True, replay=False).choice == "RabbitMQ"
    assert guide.stated() == {"routing": True, "replies": True}


def test_the_form_in_a_kernel_ends_with_its_cells_state_and_the_site_shows_it():
    """In a real kernel (nbclient, storing widget state as the site builder does): the form's output is a widget
    with a text/html fallback; when the cell ends both say 'final' and name the cell; a click (a value change)
    re-renders the answer in that output; the site's static_widgets keeps the final answer."""
    import nbformat
    from nbclient import NotebookClient

    from brokerlab.site import static_widgets

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in [
        "from brokerlab.views.decision import DecisionGuide\nguide = DecisionGuide({'replay': True})\nguide.display()",
        "guide.controls['routing'].value = True\nguide.controls['replies'].value = True\n"
        "guide.controls['replay'].value = False",   # what clicks do, from the kernel side
    ]])
    NotebookClient(nb, timeout=60, kernel_name="python3", store_widget_state=True).execute()
    [output] = [o for o in nb.cells[0].outputs if o.get("output_type") == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in output["data"]
    fallback = output["data"]["text/html"]
    assert "data-view-state='final'" in fallback and "data-cell='1'" in fallback
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    answers = [m["state"]["value"] for m in state.values()
               if m["state"].get("_model_name") == "HTMLModel" and "brokerlab-view" in m["state"]["value"]]
    assert len(answers) == 1 and "→ RabbitMQ" in answers[0] and "data-cell='1'" in answers[0]
    assert "→ RabbitMQ" in fallback, "the fallback follows the clicks too"
    static_widgets(nb)
    assert "brokerlab-view" in nb.cells[0].outputs[0]["data"]["text/html"]
    assert "application/vnd.jupyter.widget-view+json" not in nb.cells[0].outputs[0]["data"]


def test_the_site_turns_links_between_notebooks_into_links_between_pages():
    from brokerlab.site import site_links

    page = ("<a href='05a_kafka_partitions_and_groups.ipynb#cell-id=cell-36'>x</a> "
            '<a href="04_rabbitmq_exchanges.ipynb">y</a> <a href="https://example.org/a.ipynb">z</a>')
    assert site_links(page) == ("<a href='05a_kafka_partitions_and_groups.html#cell-id=cell-36'>x</a> "
                                '<a href="04_rabbitmq_exchanges.html">y</a> <a href="https://example.org/a.ipynb">z</a>')


def test_per_key_order_with_competing_consumers_says_share_groups_do_not_order():
    """Kafka wins per-key order, but its work-queue advice (a share group) gives no order: the answer says so."""
    answer = decision.recommend({"ordering": "per key", "work_queue": True, "languages": "several"})
    assert answer.choice == "Kafka"
    assert any("consumer group" in c and "not a share group" in c for c in answer.conditions), answer.conditions


def test_celery_on_the_redis_you_run_carries_the_eviction_condition():
    answer = decision.recommend({"have_redis": True, "tasks": True})
    assert answer.choice == "Celery"
    assert any("noeviction" in c for c in answer.conditions), answer.conditions
    assert not any("noeviction" in c for c in decision.recommend({"tasks": True}).conditions)


def test_may_lose_some_answers_without_redis_and_a_bare_fact_says_why_there_is_no_answer():
    answer = decision.recommend({"durability": "may lose some on a crash", "ops_budget": "a few hours a month"})
    assert answer.choice == "Redis" and any("BLMOVE" in c for c in answer.conditions)
    view = AnswerView({"have_redis": True})
    view.refresh()
    assert view.model["answer"].choice is None and "no system gains on that alone" in view.render_text()


def test_a_condition_about_one_system_is_not_stated_when_it_is_not_in_the_answer():
    answer = decision.recommend({"durability": "survive a process crash"})
    assert "Redis" not in answer.systems and not any("AOF" in c for c in answer.conditions), answer.conditions
    replay = decision.recommend({"replay": True})
    assert any("retention" in c for c in replay.conditions)
