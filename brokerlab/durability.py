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

from . import kafka_tools
from .checker import History, Report
from .stack.procs import wait_gone
from .waiting import wait_for

# --- Kafka ---------------------------------------------------------------------------------------


def kafka_leader_kill(cluster, topic: str, acks: str, min_insync: int = 1, before: int = 300,
                      during: int = 300) -> Report:
    """Pause both followers of a partition (SIGSTOP: they stop fetching), publish `during` messages,
    SIGKILL the partition's leader, resume the followers, let the cluster elect one of them, read back.

    With acks=1 the leader acknowledges what only it has: those messages die with it.  With acks=all and
    min.insync.replicas=2 nothing is acknowledged until a follower has it; the producer (idempotent) retries
    the rest on the new leader."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import NewTopic

    from .stack.scratch import partition_leader

    admin = cluster.admin()
    controller = admin.describe_cluster(request_timeout=10).result(15).controller.id
    # the leader is not the active controller: the metadata quorum then keeps a member that was never hit
    leader = next(n.node_id for n in cluster.nodes if n.node_id != controller)
    followers = [n.node_id for n in cluster.nodes if n.node_id != leader]
    admin.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[leader, *followers]],
                                  config={"min.insync.replicas": str(min_insync)})])[topic].result(30)
    wait_for(lambda: partition_leader(admin, topic) == leader, 30, f"node {leader} to lead {topic}-0")

    history = History(f"Kafka acks={acks}" + (f", min.insync.replicas={min_insync}" if acks == "all" else ""))
    config = {"acks": acks, "linger.ms": 5, "message.timeout.ms": 40000, "request.timeout.ms": 15000}
    if acks == "all":
        config["enable.idempotence"] = True  # retries after the leader change cannot duplicate
    producer = cluster.producer(**config)

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
    wait_for(lambda: kafka_tools.watermarks(admin, topic, [0])[0][1] >= before, 30,
             f"the followers of {topic}-0 to copy the first {before} messages")

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
        time.sleep(1)
        send(range(before + 1, before + during))
        # acks=1: the leader acknowledges alone, so wait until it has acknowledged every message (bounded);
        # acks=all: nothing can come while both followers are paused, so a short look is enough.
        deadline = time.monotonic() + (3 if acks == "all" else 30)
        while len(producer) and time.monotonic() < deadline:
            producer.poll(0.1)
        pid = cluster.node(leader).pid
        history.inject(pid, signal.SIGKILL, f"kafka node {leader} (leader of {topic}-0)")
        wait_gone(pid, 10)
    finally:
        for follower, pid in zip(followers, paused):
            history.inject(pid, signal.SIGCONT, f"kafka node {follower}")
    producer.flush(45)
    history.done_publishing()
    wait_for(lambda: partition_leader(admin, topic) in followers, 30, f"a new leader for {topic}-0")

    consumer = cluster.consumer(f"{topic}-reader", **{"enable.auto.commit": False, "enable.partition.eof": True})
    received: list[int] = []
    try:
        consumer.assign([TopicPartition(topic, 0, -2)])  # -2: OFFSET_BEGINNING
        deadline = time.monotonic() + 30
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
    return history.check(received)


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
