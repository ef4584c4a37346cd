"""The catalogue of wrong implementations: the harness every lab's tests use.

A lab's tests list plausible wrong solutions, each with the function the failure must blame and
words its message must contain; the solution must pass; every check must remove what it created.

    from brokerlab.labs.catalogue import Wrong, fails_right, params, passes, leftovers

    CATALOGUE = [
        Wrong("fetch: BRPOP then LPUSH is not atomic", redis_lab.check_fetch_and_ack,
              (brpop_then_lpush, ack), blame="fetch", says=("crash", "between")),
    ]

    @pytest.mark.parametrize("wrong", params(CATALOGUE))
    def test_wrong_implementation_fails_with_the_right_message(wrong):
        fails_right(wrong)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .checking import Lab, LabCheckFailed


@dataclass(frozen=True)
class Wrong:
    """A wrong implementation and the failure it must produce."""
    name: str                       # the bug in words; becomes the test id
    check: Callable                 # the lab check (decorated with Lab.check)
    args: tuple                     # the implementation: what the check takes, in order
    blame: str | None               # the learner function the failure must name
    says: tuple[str, ...] = ()      # words (case-insensitive) the observation or the hint must contain
    kwargs: dict = field(default_factory=dict)


def _lab_of(check) -> Lab | None:
    return getattr(check, "lab", None)


def fails_right(wrong: Wrong) -> LabCheckFailed:
    """Run the check on the wrong implementation: it must fail, blame the right function, say the words,
    and leave nothing on the brokers."""
    lab = _lab_of(wrong.check)
    if lab:
        lab.reset()
    try:
        wrong.check(*wrong.args, **wrong.kwargs)
    except LabCheckFailed as failure:
        text = f"{failure.what}\n{failure.hint}".lower()
        missing = [w for w in wrong.says if w.lower() not in text]
        assert failure.function == wrong.blame, (
            f"{wrong.name}: the failure blames {failure.function!r}, expected {wrong.blame!r}:\n{failure}")
        assert not missing, f"{wrong.name}: the failure does not say {missing}:\n{failure}"
        if lab:
            left = leftovers(lab)
            assert not left, f"{wrong.name}: the check left {left} on the brokers"
        return failure
    raise AssertionError(f"{wrong.name}: the check passed a wrong implementation")


def passes(check, *args, **kwargs):
    """Run the check on a correct implementation: it must pass and leave nothing behind."""
    lab = _lab_of(check)
    if lab:
        lab.reset()
    result = check(*args, **kwargs)
    if lab:
        left = leftovers(lab)
        assert not left, f"the check left {left} on the brokers"
    return result


def params(catalogue: list[Wrong]):
    import pytest

    names = [w.name for w in catalogue]
    assert len(names) == len(set(names)), "catalogue entries need distinct names"
    return [pytest.param(w, id=w.name) for w in catalogue]


def leftovers(lab: Lab) -> list[str]:
    """The recorded scratch names still present on a broker."""
    left = []
    kinds = {kind for kind, _ in lab.scratch_names}
    names = lambda kind: [n for k, n in lab.scratch_names if k == kind]  # noqa: E731
    if "redis" in kinds:
        from ..clients import redis_client

        r = redis_client()
        try:
            for name in names("redis"):
                left += [f"redis key {k}" for k in r.scan_iter(match=name + "*", count=1000)]
        finally:
            r.close()
    if "queue" in kinds or "exchange" in kinds:
        import urllib.error
        from urllib.parse import quote

        from ..clients import rabbit_api

        for kind in ("queue", "exchange"):
            for name in names(kind):
                try:
                    rabbit_api(f"{kind}s/%2F/{quote(name, safe='')}")
                    left.append(f"rabbitmq {kind} {name}")
                except urllib.error.HTTPError as exc:
                    if exc.code != 404:
                        raise
    if "topic" in kinds or "group" in kinds:
        from .. import kafka_tools as kt
        from ..clients import kafka_admin

        admin = kafka_admin()
        topics = set(kt.topic_names(admin))
        left += [f"kafka topic {t}" for t in names("topic") if t in topics]
        if names("group"):
            listed = admin.list_consumer_groups(request_timeout=10).result(10)
            groups = {g.group_id for g in listed.valid}
            left += [f"kafka group {g}" for g in names("group") if g in groups]
    return left


__all__ = ["Wrong", "fails_right", "leftovers", "params", "passes"]
