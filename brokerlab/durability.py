"""Lesson 07's fault experiments: publish, break a chosen broker process on purpose, read back, count.

Each function runs one experiment on a scratch cluster of brokerlab.stack.scratch (never the shared
stack) and returns a brokerlab.checker.Report whose faults list what was injected and when.
The same Jepsen-style recipe for the three brokers:

1. publish `before` messages while everything is healthy (this gives the setting's throughput);
2. break the cluster in the way that hurts this configuration (the fault chosen on purpose);
3. keep publishing, record only what the broker acknowledged;
4. read back from the survivors and let the checker count lost and duplicated messages.

Every loop is bounded by a count and every wait by a deadline.
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field

from . import kafka_tools
from .checker import History, Report
from .stack.procs import wait_gone
from .waiting import WaitTimeout, wait_for

# --- Kafka ---------------------------------------------------------------------------------------


def kafka_leader_kill(cluster, topic: str, acks: str, min_insync: int = 1, before: int = 300,
                      during: int = 300, group: str | None = None) -> Report:
    """Pause both followers of a partition (SIGSTOP: they stop fetching), publish `during` messages,
    SIGKILL the partition's leader, resume the followers, let the cluster elect one of them, read back.

    With acks=1 the leader acknowledges what only it has: those messages die with it.  With acks=all and
    min.insync.replicas=2 nothing is acknowledged until a follower has it; the producer (idempotent) retries
    the rest on the new leader.

    With `group` (a name prefix), a consumer group reads the topic the whole time (subscribed before the first
    message, committing what it processed): it is the reader the report counts, so the report says whether a
    consumer that lives through the leader's death sees every acknowledged message.  The group is named so that
    its coordinator (the leader of its __consumer_offsets partition) is the node killed: its committed offsets
    must come back from another node.  The notes hold the group, its coordinator before and after, its committed
    offset before the fault and as answered after the kill, what it read after the kill, the end offset, and its
    committed offset at the end."""
    from confluent_kafka.admin import NewTopic

    from .stack.scratch import partition_leader

    admin = cluster.admin()
    controller = admin.describe_cluster(request_timeout=10).result(15).controller.id
    # the leader is not the active controller: the metadata quorum then keeps a member that was never hit
    candidates = [n.node_id for n in cluster.nodes if n.node_id != controller]
    leader = candidates[0]
    if group:  # a group whose coordinator is the node to be killed, and that node leads the topic
        _offsets_topic_leaders(cluster, admin)
        group, leader = _group_coordinated_by(admin, group, candidates)
    followers = [n.node_id for n in cluster.nodes if n.node_id != leader]
    admin.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[leader, *followers]],
                                  config={"min.insync.replicas": str(min_insync)})])[topic].result(30)
    wait_for(lambda: partition_leader(admin, topic) == leader, 30, f"node {leader} to lead {topic}-0")

    history = History(f"Kafka acks={acks}" + (f", min.insync.replicas={min_insync}" if acks == "all" else ""))
    config = {"acks": acks, "linger.ms": 5, "message.timeout.ms": 40000, "request.timeout.ms": 15000}
    if acks == "all":
        config["enable.idempotence"] = True  # retries after the leader change cannot duplicate
    producer = cluster.producer(**config)
    reader = None
    if group:
        reader = _GroupReader(cluster, group, topic)
        history.note("group", group)
    try:

        def on_delivery(err, msg):
            msg_id = int(msg.value())
            (history.failed(msg_id, err) if err else history.acked(msg_id))

        def send(ids):
            for i in ids:
                history.attempt(i)
                producer.produce(topic, value=str(i).encode(), on_delivery=on_delivery)
                producer.poll(0)

        started = time.monotonic()
        send(range(before))
        producer.flush(30)
        history.healthy_rate = len(history.acknowledged) / (time.monotonic() - started)
        # the high watermark moves once every in-sync replica has a message: the healthy phase is fully replicated
        wait_for(lambda: _end_offset(cluster, topic) >= before, 30,
                 lambda: f"the followers of {topic}-0 to copy the first {before} messages (last answer: "
                         f"{_end_offset.last})", poll=0.2)
        if reader:  # the group's consumer has read and committed the healthy phase before anything breaks
            reader.read_until(lambda: len(reader.received) >= before, 30, f"group {group} to read {before} messages")
            history.note("committed before the fault", reader.wait_committed(before))
            history.note("coordinator before the kill", _coordinator(admin, group))

        paused = [cluster.node(f).pid for f in followers]
        for follower, pid in zip(followers, paused):
            history.inject(pid, signal.SIGSTOP, f"kafka node {follower} (follower of {topic}-0)")
        try:
            # A frozen follower may still have one fetch request waiting at the leader (fetch requests are long
            # polls).  The first data to arrive answers it, and that response sits in the follower's socket buffer
            # until SIGCONT: a first message (acknowledged, then 1 s for a request still in transit) uses it up, so
            # only what is sent after it exists on the leader alone.  Without this, all `during` messages can ride
            # in that one response and survive the leader (seen in CI).
            send([before])
            producer.flush(10 if acks == "1" else 0.5)
            if reader:  # the group's consumer keeps polling (it gets nothing: the high watermark cannot move)
                reader.read_for(1.0)
            else:
                time.sleep(1)
            send(range(before + 1, before + during))
            # acks=1: the leader acknowledges alone, so wait until it has acknowledged every message (bounded);
            # acks=all: nothing can come while both followers are paused, so a short look is enough.
            deadline = time.monotonic() + (3 if acks == "all" else 30)
            while len(producer) and time.monotonic() < deadline:
                producer.poll(0.1)
                if reader:
                    reader.read_for(0)
            pid = cluster.node(leader).pid
            history.inject(pid, signal.SIGKILL, f"kafka node {leader} (leader of {topic}-0)")
            history.note("leader killed", leader)
            wait_gone(pid, 10)
        finally:
            for follower, pid in zip(followers, paused):
                history.inject(pid, signal.SIGCONT, f"kafka node {follower}")
        if reader:
            reader.killed_at = len(reader.received)
            # not polled meanwhile, the consumer commits nothing new: what comes back is what the dead node stored
            history.note("committed, answered after the kill", wait_for(reader.committed, 30,
                                                                          f"group {group}'s offsets after the kill"))
            history.note("coordinator after the kill", _coordinator(admin, group))  # a new one has just answered
            deadline = time.monotonic() + 45
            while len(producer) and time.monotonic() < deadline:  # the producer retries, the consumer keeps reading
                producer.poll(0.05)
                reader.read_for(0.05)
        producer.flush(45)  # at once when the loop above has emptied it
        history.done_publishing()
        wait_for(lambda: partition_leader(admin, topic) in followers, 30, f"a new leader for {topic}-0")
        history.note("leader after the kill", partition_leader(admin, topic))

        if reader:
            end = wait_for(lambda: _end_offset(cluster, topic) + 1, 20, f"the end offset of {topic}-0", poll=0.5) - 1
            reader.read_until(lambda: reader.position >= end, 30, f"group {group} to reach offset {end}")
            history.note("read after the kill", len(reader.received) - reader.killed_at)
            history.note("end offset", end)
            history.note("committed at the end", reader.wait_committed(end))
            return history.check(reader.received)
        return history.check(_read_partition(cluster, topic, f"{topic}-reader"))
    finally:
        if reader:
            reader.close()


def _coordinator(admin, group: str) -> int | None:
    """The broker coordinating `group`: the leader of its __consumer_offsets partition, from the cluster's metadata
    (what FindCoordinator answers).  Not asked with AdminClient.describe_consumer_groups: when its coordinator
    lookup is retried or times out, librdkafka 2.x can abort the whole process (confluentinc/librdkafka#4605,
    seen here on a fresh cluster)."""
    leaders = _partition_leaders(admin, "__consumer_offsets")
    return leaders.get(_java_string_hash(group) % len(leaders)) if leaders else None


def _partition_leaders(admin, topic: str) -> dict[int, int] | None:
    try:
        meta = admin.list_topics(topic, timeout=5).topics.get(topic)
    except Exception:
        return None
    if meta is None or meta.error is not None or not meta.partitions:
        return None
    return {p: part.leader for p, part in meta.partitions.items()}


def _group_coordinated_by(admin, prefix: str, nodes: list[int], tries: int = 200) -> tuple[str, int]:
    """A group name `prefix-N` coordinated by one of `nodes`, and that node.  A group lives in __consumer_offsets
    partition abs(Java hashCode of its name) % partition count; that partition's leader coordinates it."""
    leaders = wait_for(lambda: _partition_leaders(admin, "__consumer_offsets"), 30, "the __consumer_offsets topic")
    if not set(leaders.values()) & set(nodes):
        # Restarted nodes lead nothing until a preferred-leader election gives their partitions back (Kafka runs
        # one every leader.imbalance.check.interval.seconds, 300 s): ask for one now.
        from confluent_kafka import ElectionType, TopicPartition

        partitions = [TopicPartition("__consumer_offsets", p) for p in leaders]
        admin.elect_leaders(ElectionType.PREFERRED, partitions).result(20)  # (its timeout kwargs fail in 2.16)

        def led_by_nodes():
            found = _partition_leaders(admin, "__consumer_offsets")
            return found if found and set(found.values()) & set(nodes) else None

        leaders = wait_for(led_by_nodes, 20, f"one of nodes {nodes} to lead a __consumer_offsets partition")
    for n in range(tries):
        name = f"{prefix}-{n}"
        node = leaders.get(_java_string_hash(name) % len(leaders))
        if node in nodes:
            return name, node
    raise RuntimeError(f"none of nodes {nodes} leads a __consumer_offsets partition (leaders: {leaders})")


def _offsets_topic_leaders(cluster, admin) -> dict[int, int]:
    """{partition: leader} of __consumer_offsets, created first if no group has been used yet.  Call it while every
    node runs: created while a node is down, the topic gives that node replicas it never leads (a preferred leader
    is never placed on a fenced broker)."""
    from confluent_kafka import TopicPartition

    if not _partition_leaders(admin, "__consumer_offsets"):
        probe = cluster.consumer("brokerlab-probe")  # its coordinator lookup creates __consumer_offsets
        try:
            probe.committed([TopicPartition("brokerlab-probe", 0)], timeout=20)
        except Exception:  # only the lookup matters
            pass
        finally:
            probe.close()
    return wait_for(lambda: _partition_leaders(admin, "__consumer_offsets"), 30, "the __consumer_offsets topic")


def _java_string_hash(text: str) -> int:
    """abs(String.hashCode()) as Kafka's Utils.abs computes it (Integer.MIN_VALUE gives 0)."""
    h = 0
    for char in text:
        h = (31 * h + ord(char)) & 0xFFFFFFFF
    h = h - 2**32 if h >= 2**31 else h
    return 0 if h == -2**31 else abs(h)


def _end_offset(cluster, topic: str) -> int:
    """The high watermark of `topic` partition 0, or -1 while no broker can say (no leader known yet).
    After a failure the next call asks through a new admin client: one client's leader lookup was seen failing
    for 30 s after node restarts ("No leaders found").  `_end_offset.last` keeps the last answer or error, for the
    message of a wait that gives up."""
    admin = _end_offset.admins.get(id(cluster)) or cluster.admin()
    try:
        _end_offset.last = kafka_tools.watermarks(admin, topic, [0])[0][1]
        _end_offset.admins = {id(cluster): admin}
        return _end_offset.last
    except Exception as exc:  # e.g. _NOENT "No leaders found" right after creation or a leader change
        _end_offset.last = repr(exc)[:200]
        _end_offset.admins = {}
        return -1


_end_offset.last = None
_end_offset.admins = {}


def _read_partition(cluster, topic: str, group: str, seconds: float = 30) -> list[int]:
    """Every message id in `topic` partition 0, read from the beginning up to its end (bounded by `seconds`)."""
    from confluent_kafka import TopicPartition

    consumer = cluster.consumer(group, **{"enable.auto.commit": False, "enable.partition.eof": True})
    received: list[int] = []
    try:
        consumer.assign([TopicPartition(topic, 0, -2)])  # -2: OFFSET_BEGINNING
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF: everything there is has been read
                    break
                continue
            received.append(int(msg.value()))
    finally:
        consumer.close()
    return received


class _GroupReader:
    """A consumer in a group, subscribed to a one-partition topic, committing (asynchronously) each message
    after recording it: the application of a consumer that must live through a broker's death.  Polled in
    small slices by the experiment, so it reads while the experiment breaks things."""

    def __init__(self, cluster, group: str, topic: str):
        self.group, self.topic = group, topic
        self.consumer = cluster.consumer(group, **{"enable.auto.commit": False})
        self.consumer.subscribe([topic])
        self.received: list[int] = []
        self.position = 0          # the offset after the last message read
        self.killed_at = 0         # len(received) when the leader was killed

    def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            msg = self.consumer.poll(max(0.0, min(0.1, deadline - time.monotonic())))
            if msg is not None and not msg.error():
                self.received.append(int(msg.value()))
                self.position = msg.offset() + 1
                self.consumer.commit(message=msg, asynchronous=True)  # processed: commit it (never blocks)
            if time.monotonic() >= deadline:
                return

    def read_until(self, condition, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"gave up after {seconds:g} s waiting for {what} (read {len(self.received)})")
            self.read_for(0.2)

    def committed(self) -> int | None:
        """The group's committed offset as its coordinator answers now (None: no answer, e.g. it is moving).
        Asked through the group's own consumer: an admin request would risk librdkafka#4605 (see _coordinator)."""
        from confluent_kafka import TopicPartition

        try:
            offset = self.consumer.committed([TopicPartition(self.topic, 0)], timeout=5)[0].offset
        except Exception:
            return None
        return offset if offset >= 0 else None

    def wait_committed(self, offset: int, seconds: float = 20) -> int:
        """The group's committed offset once it reached `offset`.  An asynchronous commit sent while the
        coordinator was moving is lost, not retried: the position is committed again meanwhile, as an
        application committing periodically would."""
        from confluent_kafka import TopicPartition

        def reached():
            self.read_for(0.1)  # serves the commit callbacks
            value = self.committed()
            if value is not None and value >= offset:
                return value
            self.consumer.commit(offsets=[TopicPartition(self.topic, 0, self.position)], asynchronous=True)
            return None

        return wait_for(reached, seconds, f"group {self.group} to commit offset {offset}")

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None


@dataclass
class UncleanElection:
    """What kafka_unclean_election saw: the ISR before and after the follower's pause, the answers to three
    producer settings while the ISR was the leader alone, the partitions after the leader's death, and one
    checker report per setting of unclean.leader.election.enable."""

    leader: int
    follower: int
    lag_time_max_ms: int                 # the broker's replica.lag.time.max.ms
    isr_before: dict[str, list[int]]     # per setting: the ISR while everything was healthy
    isr_paused: dict[str, list[int]]     # ... once the follower had been paused long enough
    shrink_seconds: float                # from the SIGSTOP until every ISR was the leader alone
    answers: dict[str, str]              # producer setting -> "acknowledged" or the broker's error
    after_kill: dict[str, tuple[int, list[int]]]  # per topic: (leader, ISR) once the follower was back
    offline_error: str                   # what a producer got from the leaderless partition
    offline_read: int                    # messages a consumer got from it in `offline_seconds`
    offline_seconds: float
    unclean_default: str = ""            # unclean.leader.election.enable of a topic created without it
    reports: dict[str, Report] = field(default_factory=dict)


def partition_info(admin, topic: str, partition: int = 0):
    """The partition as AdminClient.describe_topics describes it (`.leader`, `.replicas`, `.isr`), or None when
    the broker asked did not answer within 4 s (a paused broker may hold the request) or does not know the topic
    yet (a new topic reaches every broker's metadata a moment after it is created): call it in a wait_for."""
    from confluent_kafka import TopicCollection

    try:
        described = admin.describe_topics(TopicCollection([topic]), request_timeout=2)[topic].result(4)
    except Exception:
        return None
    return next((p for p in described.partitions if p.id == partition), None)


def partition_state(admin, topic: str, partition: int = 0) -> tuple[int, list[int]] | None:
    """(leader, ISR) of a partition as the cluster's metadata says; leader -1 when there is none; None when no
    answer came (see partition_info)."""
    part = partition_info(admin, topic, partition)
    if part is None:
        return None
    return (part.leader.id if part.leader is not None else -1), sorted(n.id for n in part.isr)


def _answered_state(admin, topic: str) -> tuple[int, list[int]]:
    return wait_for(lambda: partition_state(admin, topic), 20, f"the cluster to describe {topic}")


def _inject(histories, pid: int, sig: int, target: str) -> None:
    """One signal, recorded in every history of the run."""
    first, *rest = histories
    fault = first.inject(pid, sig, target)
    for history in rest:
        history.record_fault(fault.signal, target, pid)


def kafka_unclean_election(cluster, prefix: str, before: int = 100, during: int = 100) -> UncleanElection:
    """The ISR shrinks, and what `acks=all` then promises; then the leader dies with and without unclean election.

    Three one-partition topics, each on two nodes (leader L, follower F; neither is the KRaft controller):
    `-min2` (min.insync.replicas=2), `-clean` and `-unclean` (min.insync.replicas=1, unclean.leader.election.enable
    false / true, set at creation).  Every node of the scratch cluster is also a KRaft controller, so pausing
    two of three would stop the metadata quorum, and with it every ISR change: hence two replicas, not three.

    1. `before` messages to -clean and -unclean (acks=all), fully replicated;
    2. SIGSTOP F; wait until the broker's own metadata says every ISR is [L] (F stopped fetching for
       replica.lag.time.max.ms, or missed the controller's heartbeat deadline and was fenced);
    3. on that ISR: acks=all to -min2 (refused), acks=1 to -min2, acks=all to -clean and -unclean (`during`
       each: acknowledged by L alone, recorded by the checker);
    4. SIGKILL L, SIGCONT F: -unclean elects F (out of sync), -clean has no leader (a producer and a consumer
       are tried, bounded); restart L (the cluster has three nodes again), read both topics back.
    """
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import ConfigResource, NewTopic

    from .stack.scratch import partition_leader

    admin = cluster.admin()
    _offsets_topic_leaders(cluster, admin)  # the group coordinators' topic is placed while every node runs
    controller = admin.describe_cluster(request_timeout=10).result(15).controller.id
    leader, follower = [n.node_id for n in cluster.nodes if n.node_id != controller][:2]
    settings = {"min2": {"min.insync.replicas": "2"},
                "clean": {"min.insync.replicas": "1", "unclean.leader.election.enable": "false"},
                "unclean": {"min.insync.replicas": "1", "unclean.leader.election.enable": "true"}}
    topics = {key: f"{prefix}-{key}" for key in settings}
    created = admin.create_topics([NewTopic(topics[key], num_partitions=1, replica_assignment=[[leader, follower]],
                                            config=config) for key, config in settings.items()])
    for future in created.values():
        future.result(30)
    for name in topics.values():
        wait_for(lambda: partition_leader(admin, name) == leader, 30, f"node {leader} to lead {name}-0")
    broker = ConfigResource(ConfigResource.Type.BROKER, str(leader))
    lag_ms = int(admin.describe_configs([broker])[broker].result(15)["replica.lag.time.max.ms"].value)
    min2 = ConfigResource(ConfigResource.Type.TOPIC, topics["min2"])  # created without the setting: the default
    unclean_default = admin.describe_configs([min2])[min2].result(15)["unclean.leader.election.enable"].value

    histories = {key: History(f"Kafka acks=all, min.insync=1, unclean election {'on' if key == 'unclean' else 'off'}")
                 for key in ("clean", "unclean")}
    # no retries: the broker's own answer is the result, not the client retrying it until message.timeout.ms
    producer = cluster.producer(**{"acks": "all", "enable.idempotence": False, "retries": 0,
                                   "message.timeout.ms": 10000})

    def send(key: str, ids) -> None:
        history = histories[key]

        def on_delivery(err, msg):
            (history.failed(int(msg.value()), err) if err else history.acked(int(msg.value())))

        for i in ids:
            history.attempt(i)
            producer.produce(topics[key], value=str(i).encode(), on_delivery=on_delivery)
            producer.poll(0)

    started = time.monotonic()
    for key in histories:
        send(key, range(before))
    producer.flush(30)
    rate = sum(len(h.acknowledged) for h in histories.values()) / (time.monotonic() - started)
    for history in histories.values():
        history.healthy_rate = rate  # the same setting (acks=all, min.insync.replicas=1) on both topics
    for name in (topics["clean"], topics["unclean"]):
        wait_for(lambda: _end_offset(cluster, name) >= before, 30,
                 f"node {follower} to copy the first {before} messages of {name}", poll=0.2)
    isr_before = {key: _answered_state(admin, name)[1] for key, name in topics.items()}

    follower_pid = cluster.node(follower).pid
    answers: dict[str, str] = {}
    _inject(histories.values(), follower_pid, signal.SIGSTOP, f"kafka node {follower} (follower of {prefix}-*)")
    paused_at = time.monotonic()
    try:
        wait_for(lambda: all((partition_state(admin, name) or (0, []))[1] == [leader] for name in topics.values()),
                 max(30, 4 * lag_ms / 1000), f"the ISR of {prefix}-* to shrink to [{leader}]")
        shrink_seconds = time.monotonic() - paused_at
        isr_paused = {key: _answered_state(admin, name)[1] for key, name in topics.items()}

        def answer(client, topic: str) -> str:
            outcome = []
            client.produce(topic, b"probe", on_delivery=lambda err, msg: outcome.append(err))
            client.flush(15)
            return "no answer" if not outcome else "acknowledged" if outcome[0] is None else outcome[0].name()

        answers["acks=all, min.insync.replicas=2"] = answer(producer, topics["min2"])
        answers["acks=1, min.insync.replicas=2"] = answer(cluster.producer(acks="1"), topics["min2"])
        for key in histories:
            send(key, range(before, before + during))
        producer.flush(15)
        answers["acks=all, min.insync.replicas=1"] = (
            "acknowledged" if len(histories["clean"].acknowledged) == before + during else "refused")
        leader_pid = cluster.node(leader).pid
        _inject(histories.values(), leader_pid, signal.SIGKILL, f"kafka node {leader} (leader of {prefix}-*)")
        killed_at = time.monotonic()
        for history in histories.values():
            history.done_publishing()
        wait_gone(leader_pid, 10)
    finally:
        _inject(histories.values(), follower_pid, signal.SIGCONT, f"kafka node {follower}")

    # F comes back, is unfenced, and the controller elects it where the topic allows an unclean election
    wait_for(lambda: partition_leader(admin, topics["unclean"]) == follower, 40,
             f"node {follower} to be elected (uncleanly) for {topics['unclean']}-0")
    histories["unclean"].record_fault("unclean election", f"node {follower} (out of sync) leads {topics['unclean']}-0")
    after_kill = {key: _answered_state(admin, name) for key, name in topics.items()}

    # -clean has no leader: a producer gets an error and a consumer reads nothing, both within seconds
    offline_seconds = 3.0
    offline = cluster.producer(**{"acks": "all", "message.timeout.ms": int(offline_seconds * 1000)})
    outcome: list = []
    offline.produce(topics["clean"], b"while offline", on_delivery=lambda err, msg: outcome.append(err))
    reader = cluster.consumer(f"{prefix}-offline-reader", **{"enable.auto.commit": False})
    offline_read = 0
    try:
        reader.assign([TopicPartition(topics["clean"], 0, -2)])  # -2: from the beginning
        deadline = time.monotonic() + offline_seconds + 5
        while not outcome and time.monotonic() < deadline:  # the producer's deadline ends the look
            offline.poll(0)
            msg = reader.poll(0.2)
            offline_read += msg is not None and not msg.error()
    finally:
        reader.close()
    offline_error = "no answer" if not outcome else "acknowledged" if outcome[0] is None else outcome[0].name()
    histories["clean"].record_fault("offline", f"{topics['clean']}-0 has no leader: {offline_error}")

    # the old leader returns: -clean comes back online with it, -unclean makes it a follower of F
    cluster.restart_dead()
    wait_for(lambda: partition_leader(admin, topics["clean"]) == leader, 40,
             f"node {leader} to lead {topics['clean']}-0")
    histories["clean"].note("seconds without a leader", round(time.monotonic() - killed_at, 1))
    result = UncleanElection(leader, follower, lag_ms, isr_before, isr_paused, shrink_seconds, answers, after_kill,
                             offline_error, offline_read, offline_seconds, unclean_default)
    for key, history in histories.items():
        history.note("leader after the kill", after_kill[key][0])
        result.reports[key] = history.check(_read_partition(cluster, topics[key], f"{topics[key]}-reader"))
    return result


# --- RabbitMQ --------------------------------------------------------------------------------------


def rabbitmq_leader_kill(nodes, queue: str, queue_type: str, leader_index: int = 2, before: int = 300,
                         after: int = 100) -> Report:
    """Declare a durable `queue_type` queue ("quorum" or "classic") led by nodes[leader_index], publish
    persistent messages with publisher confirms through nodes[0], SIGKILL the leader's node after `before`
    confirms, publish `after` more, then read everything the surviving nodes can give back.

    A quorum queue has copies on every node: a follower becomes leader and nothing confirmed is lost.
    A classic queue lives on its one node: while that node is down nothing of it can be read."""
    import pika
    import pika.exceptions

    leader, entry = nodes[leader_index], nodes[0]
    assert leader is not entry, "the node we publish and read through must survive"
    arguments = {"x-queue-type": queue_type, "x-queue-leader-locator": "client-local"}
    with leader.connection() as connection:  # client-local: the queue's leader is the node we talk to
        connection.channel().queue_declare(queue, durable=True, arguments=arguments)

    history = History(f"RabbitMQ {queue_type} queue, confirms, leader node killed")
    connection = entry.connection()
    channel = connection.channel()
    channel.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    started = time.monotonic()
    try:
        for i in range(before + after):
            if i == before:
                history.healthy_rate = len(history.acknowledged) / (time.monotonic() - started)
                pid = leader.pid
                history.inject(pid, signal.SIGKILL, f"rabbitmq {leader.nodename} (leader of {queue})")
                wait_gone(pid, 10)
            history.attempt(i)
            try:
                channel.basic_publish("", queue, str(i).encode(), persistent, mandatory=True)
                history.acked(i)  # basic_publish returned: the broker confirmed it
            except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                history.failed(i, type(exc).__name__)
            except pika.exceptions.AMQPError as exc:  # the channel was closed: reopen, bounded by the loop
                history.failed(i, type(exc).__name__)
                if connection.is_closed:
                    connection = entry.connection()
                channel = connection.channel()
                channel.confirm_delivery()
        history.done_publishing()
    finally:
        connection.close()

    # read only once the survivors have noticed the death (the management API says so)
    wait_for(lambda: not any(n["running"] for n in entry.api_get("nodes") if n["name"] == leader.nodename), 30,
             f"the cluster to see {leader.nodename} down")
    received: list[int] = []
    running = {n["name"] for n in entry.api_get("nodes") if n["running"]}
    home = entry.api_get(f"queues/%2F/{queue}").get("node")
    if queue_type == "classic" and home not in running:
        # a classic queue lives on its home node only; RabbitMQ 4.0 answers a basic.get on it only after
        # ~65 s, with NOT_FOUND (measured here), so the survivors' management API is asked instead
        history.record_fault("unreadable", f"{queue}: its home node {home} is down")
        return history.check(received)
    with entry.connection() as reader:
        channel = reader.channel()
        try:
            for _ in range(before + after + 10):  # bounded: at most every message once, and then some
                method, _props, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    break
                received.append(int(body))
        except pika.exceptions.ChannelClosedByBroker as exc:  # the queue's only node is down
            history.record_fault("read refused", f"{queue}: {exc.reply_text[:80]}")
    return history.check(received)


# --- Redis -------------------------------------------------------------------------------------


def redis_failover(group, prefix: str, wait_for_replica: bool, before: int = 100, during: int = 300,
                   value_size: int = 50_000) -> Report:
    """Write `before` keys while healthy, freeze the replica (SIGSTOP: replication stalls), write `during`
    more, SIGKILL the primary, thaw the replica and let Sentinel promote it; read back from the new primary.

    Without WAIT every reply of the primary counts as acknowledged, and what the replica never got is lost.
    With `WAIT 1 200` a write counts only once a replica has it: the frozen replica makes WAIT answer 0."""
    import redis

    client = group.primary.client()
    value = "x" * value_size  # big values: the stalled replication stream outgrows the kernel's socket buffers
    history = History("Redis async replication" + (" + WAIT 1" if wait_for_replica else ""))

    def write(i: int) -> None:
        key = f"{prefix}:{i}"
        history.attempt(key)
        try:
            client.set(key, value)
            if wait_for_replica and client.wait(1, 200) < 1:
                history.failed(key, "WAIT: no replica has it")
                return
            history.acked(key)
        except redis.RedisError as exc:
            history.failed(key, exc)

    started = time.monotonic()
    for i in range(before):
        write(i)
    history.healthy_rate = len(history.acknowledged) / (time.monotonic() - started)
    replica_pid = group.replica.pid
    history.inject(replica_pid, signal.SIGSTOP, f"redis replica :{group.replica.port}")
    try:
        for i in range(before, before + during):
            write(i)
        history.done_publishing()
        pid = group.primary.pid
        history.inject(pid, signal.SIGKILL, f"redis primary :{group.primary.port}")
        wait_gone(pid, 10)
    finally:
        history.inject(replica_pid, signal.SIGCONT, f"redis replica :{group.replica.port}")
    wait_for(lambda: group.current_primary()[1] == group.replica.port, 40, "Sentinel to promote the replica")
    history.record_fault("failover", f"Sentinel promoted :{group.replica.port}")
    survivor = group.replica.client()
    keys = [f"{prefix}:{i}" for i in range(before + during)]
    pipe = survivor.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    received = [key for key, found in zip(keys, pipe.execute()) if found]
    return history.check(received)
