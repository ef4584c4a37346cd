"""Lab 02 checks against the real Redis: the solution passes; a catalogue of wrong implementations, each
failing with the right message and blaming the right function; nothing is left behind."""
import pytest

from brokerlab.labs import redis_streams_lab as lab02
from brokerlab.labs.catalogue import Wrong, fails_right, params, passes

# --- the solution, and its bugs as switches ---------------------------------------------------------------

APPLY_ONCE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  return redis.call('HINCRBY', KEYS[2], 'balance', ARGV[2])
end
return false
"""


def make_process_entry(processed="keep", bug=None):
    def process_entry(r, c, entry_id, fields, handle):
        [pending] = r.xpending_range(c.stream, c.group, min=entry_id, max=entry_id, count=1)
        delivered = pending["times_delivered"]
        too_many = delivered >= c.max_deliveries if bug == "dead one early" else delivered > c.max_deliveries
        if bug == "never dead-letters":
            too_many = False
        if too_many:
            letter = {"origin_id": entry_id, "deliveries": delivered}
            if bug != "drops the fields":
                letter = {**fields, **letter}
            if bug == "dead letter in two commands":
                r.xadd(c.dead_letter, letter)
                r.xack(c.stream, c.group, entry_id)
                return "dead"
            with r.pipeline(transaction=(bug != "dead letter in a plain pipeline")) as tx:
                tx.xadd(c.dead_letter, letter)
                tx.xack(c.stream, c.group, entry_id)
                tx.execute()
            return "dead"
        if bug == "acks first":
            r.xack(c.stream, c.group, entry_id)
        if bug == "swallows crashes":
            try:
                handle(entry_id, fields)
            except Exception:
                pass
        else:
            handle(entry_id, fields)
        if bug in ("never acks", "acks first"):
            return "handled"
        with r.pipeline(transaction=True) as tx:
            tx.xack(c.stream, c.group, entry_id)
            if processed == "delete" and bug != "forgets to delete":
                tx.xdel(c.stream, entry_id)
            tx.execute()
        return "handled"
    return process_entry


process_entry = make_process_entry()


def make_recover_own(bug=None):
    def recover_own(r, c, handle):
        done, last_id = 0, (">" if bug == "reads >" else "0")
        if bug == "also claims":
            done += len(r.xautoclaim(c.stream, c.group, c.name, 0)[1])
        for _ in range(1000):
            reply = r.xreadgroup(c.group, c.name, {c.stream: last_id}, count=c.batch)
            entries = reply[0][1] if reply else []
            if not entries:
                return done
            for entry_id, fields in entries:
                if bug == "swallows crashes":
                    try:
                        process_entry(r, c, entry_id, fields, handle)
                    except Exception:
                        continue
                else:
                    process_entry(r, c, entry_id, fields, handle)
                if last_id != ">":
                    last_id = entry_id
                done += 1
            if bug == "one read":
                return done
        return done
    return recover_own


recover_own = make_recover_own()


def recover_own_by_xpending(r, c, handle):  # finds its entries, but XPENDING + XRANGE count no delivery
    done = 0
    for _ in range(1000):
        mine = r.xpending_range(c.stream, c.group, min="-", max="+", count=c.batch, consumername=c.name)
        if not mine:
            return done
        for pending in mine:
            [(entry_id, fields)] = r.xrange(c.stream, min=pending["message_id"], max=pending["message_id"])
            process_entry(r, c, entry_id, fields, handle)
            done += 1
    return done


def make_claim_dead(bug=None):
    def claim_dead(r, c, handle):
        done, cursor = 0, "0-0"
        min_idle = 0 if bug == "min idle 0" else c.min_idle_ms
        for _ in range(1000):
            cursor, claimed, *_ = r.xautoclaim(c.stream, c.group, c.name, min_idle, start_id=cursor, count=c.batch)
            for entry_id, fields in claimed:
                process_entry(r, c, entry_id, fields, handle)
                done += 1
            if cursor == "0-0" or bug == "ignores the cursor":
                return done
        return done
    return claim_dead


claim_dead = make_claim_dead()


def make_consume(bug=None):
    def consume(r, c, handle):
        done = 0 if bug == "skips own pending" else recover_own(r, c, handle)
        done += 0 if bug == "never claims" else claim_dead(r, c, handle)
        for _ in range(1000):
            reply = r.xreadgroup(c.group, c.name, {c.stream: ">"}, count=c.batch)
            if not reply:
                return done
            for entry_id, fields in reply[0][1]:
                process_entry(r, c, entry_id, fields, handle)
                done += 1
        return done
    return consume


consume = make_consume()


def apply_once(r, ledger, entry_id, amount):
    return r.eval(APPLY_ONCE, 2, f"{ledger}:applied", ledger, entry_id, amount)


def apply_mark_first(r, ledger, entry_id, amount):
    if r.sadd(f"{ledger}:applied", entry_id):
        r.hincrby(ledger, "balance", amount)


def apply_effect_first(r, ledger, entry_id, amount):
    if not r.sismember(f"{ledger}:applied", entry_id):
        r.hincrby(ledger, "balance", amount)
        r.sadd(f"{ledger}:applied", entry_id)


def apply_always(r, ledger, entry_id, amount):
    r.hincrby(ledger, "balance", amount)


def apply_check_then_multi(r, ledger, entry_id, amount):  # crash-safe, but two deliveries at once both pass
    if r.sismember(f"{ledger}:applied", entry_id):
        return
    with r.pipeline(transaction=True) as both:
        both.sadd(f"{ledger}:applied", entry_id)
        both.hincrby(ledger, "balance", amount)
        both.execute()


def apply_watched(r, ledger, entry_id, amount):  # WATCH/MULTI/EXEC: a right answer the race check must accept
    def apply(pipe):
        if pipe.sismember(f"{ledger}:applied", entry_id):
            return
        pipe.multi()
        pipe.sadd(f"{ledger}:applied", entry_id)
        pipe.hincrby(ledger, "balance", amount)
    r.transaction(apply, f"{ledger}:applied")


# --- the solution passes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("processed", lab02.PROCESSED_CHOICES)
def test_process_entry_passes_with_either_decision(processed):
    passes(lab02.check_process_entry, make_process_entry(processed), processed)


def test_the_solution_passes_every_other_check(capsys):
    passes(lab02.check_recover_own, recover_own)
    passes(lab02.check_claim_dead, claim_dead)
    passes(lab02.check_consume, consume)
    passes(lab02.check_apply_once, apply_once)
    assert capsys.readouterr().out.count("✔") == 4


def apply_marks_in_the_ledger(r, ledger, entry_id, amount):  # right too: the marks live in the ledger hash
    script = """
    if redis.call('HSETNX', KEYS[1], 'applied:' .. ARGV[1], 1) == 1 then
      return redis.call('HINCRBY', KEYS[1], 'balance', ARGV[2])
    end
    return false
    """
    return r.eval(script, 1, ledger, entry_id, amount)


@pytest.mark.parametrize("right", [apply_watched, apply_marks_in_the_ledger])
def test_other_right_apply_once_solutions_pass(right):
    passes(lab02.check_apply_once, right)


# --- the catalogue ---------------------------------------------------------------------------------------

CATALOGUE = [
    Wrong("no decision taken", lab02.check_process_entry, (process_entry, None), blame="PROCESSED",
          says=("decision is yours",)),
    Wrong("acks before the work", lab02.check_process_entry, (make_process_entry(bug="acks first"), "keep"),
          blame="process_entry", says=("lost", "after the work")),
    Wrong("never acks", lab02.check_process_entry, (make_process_entry(bug="never acks"), "keep"),
          blame="process_entry", says=("never acknowledged",)),
    Wrong("swallows the worker's crash", lab02.check_process_entry,
          (make_process_entry(bug="swallows crashes"), "keep"), blame="process_entry", says=("returned normally",)),
    Wrong("dead-letters at max_deliveries, not above", lab02.check_process_entry,
          (make_process_entry(bug="dead one early"), "keep"), blame="process_entry", says=("too early", "more than")),
    Wrong("never dead-letters", lab02.check_process_entry, (make_process_entry(bug="never dead-letters"), "keep"),
          blame="process_entry", says=("poison", "xpending")),
    Wrong("dead letter without the entry's fields", lab02.check_process_entry,
          (make_process_entry(bug="drops the fields"), "keep"), blame="process_entry", says=("original fields",)),
    Wrong("dead-letter copy and XACK in two commands", lab02.check_process_entry,
          (make_process_entry(bug="dead letter in two commands"), "keep"), blame="process_entry",
          says=("2 times", "multi/exec")),
    Wrong("dead-letter copy and XACK in a pipeline without MULTI/EXEC", lab02.check_process_entry,
          (make_process_entry(bug="dead letter in a plain pipeline"), "keep"), blame="process_entry",
          says=("2 times", "multi/exec")),
    Wrong("decided delete, only acks", lab02.check_process_entry,
          (make_process_entry("delete", bug="forgets to delete"), "delete"), blame="process_entry",
          says=("still in the stream",)),
    Wrong("decided keep, deletes", lab02.check_process_entry, (make_process_entry("delete"), "keep"),
          blame="process_entry", says=("gone from the stream",)),
    Wrong("recover_own reads '>'", lab02.check_recover_own, (make_recover_own("reads >"),), blame="recover_own",
          says=("0 of the 5", "never with '>'")),
    Wrong("recover_own reads one batch", lab02.check_recover_own, (make_recover_own("one read"),),
          blame="recover_own", says=("2 of the 5", "until none is left")),
    Wrong("recover_own also claims a peer's entries", lab02.check_recover_own, (make_recover_own("also claims"),),
          blame="recover_own", says=("a peer",)),
    Wrong("recover_own carries on after a crash", lab02.check_recover_own, (make_recover_own("swallows crashes"),),
          blame="recover_own", says=("carried on", "propagate")),
    Wrong("recover_own lists its entries with XPENDING and reads them with XRANGE (counts no delivery)",
          lab02.check_recover_own, (recover_own_by_xpending,), blame="recover_own",
          says=("die on it forever", "counts a delivery")),
    Wrong("claim_dead with min idle 0", lab02.check_claim_dead, (make_claim_dead("min idle 0"),),
          blame="claim_dead", says=("live consumer", "min_idle_ms")),
    Wrong("claim_dead ignores the cursor", lab02.check_claim_dead, (make_claim_dead("ignores the cursor"),),
          blame="claim_dead", says=("2 of the 5", "cursor")),
    Wrong("consume skips its own pending entries", lab02.check_consume, (make_consume("skips own pending"),),
          blame="consume", says=("still holds", "own pending")),
    Wrong("consume never claims", lab02.check_consume, (make_consume("never claims"),), blame="consume",
          says=("poison", "claims")),
    Wrong("apply_once: mark, then effect", lab02.check_apply_once, (apply_mark_first,), blame="apply_once",
          says=("died after its command 1", "one step")),
    Wrong("apply_once: effect, then mark", lab02.check_apply_once, (apply_effect_first,), blame="apply_once",
          says=("died after its command", "one step")),
    Wrong("apply_once: check, then mark and effect in MULTI (two deliveries at once)", lab02.check_apply_once,
          (apply_check_then_multi,), blame="apply_once", says=("at once", "one step")),
    Wrong("apply_once: no mark at all", lab02.check_apply_once, (apply_always,), blame="apply_once",
          says=("redelivery", "not be applied again")),
]


def test_the_catalogue_is_big_enough():
    assert len(CATALOGUE) >= 10
    assert {w.blame for w in CATALOGUE} >= {"PROCESSED", "process_entry", "recover_own", "claim_dead", "consume",
                                            "apply_once"}


@pytest.mark.parametrize("wrong", params(CATALOGUE))
def test_a_wrong_implementation_fails_with_the_right_message(wrong):
    fails_right(wrong)
