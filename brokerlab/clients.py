"""Ready-made clients with short timeouts.

Each factory returns the library's own client object (redis.Redis,
pika.BlockingConnection, confluent_kafka Producer/Consumer/AdminClient), so the
notebooks teach the real APIs.  What the factories add: endpoints from the
environment, timeouts on every call, no silent retry loops, and errors that say
which broker is down and how to start it.
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from functools import lru_cache

from . import timeouts
from .endpoints import BROKER_NAMES, Endpoints, current
from .errors import BrokerUnavailable


def unavailable(broker: str, reason: str, ep: Endpoints | None = None, address: str | None = None) -> BrokerUnavailable:
    ep = ep or current()
    error_type = _unavailable_type(broker)
    return error_type(BROKER_NAMES[broker], address or ep.address(broker), reason, ep.start_command())


@lru_cache(maxsize=None)
def _unavailable_type(broker: str) -> type:
    """BrokerUnavailable that is also the client library's own connection error,
    so code that catches redis.ConnectionError or AMQPConnectionError still works."""
    bases: tuple = (BrokerUnavailable,)
    if broker == "redis":
        import redis

        bases += (redis.exceptions.ConnectionError,)
    elif broker == "rabbitmq":
        import pika.exceptions

        bases += (pika.exceptions.AMQPConnectionError,)
    elif broker == "kafka":
        from confluent_kafka import KafkaException

        bases += (KafkaException,)
    name = f"{BROKER_NAMES[broker]}Unavailable"

    def __init__(self, *args):
        BrokerUnavailable.__init__(self, *args)
        if broker == "redis":  # what redis-py's own ConnectionError.__init__ sets (its __repr__ reads it)
            from redis.exceptions import ExceptionType

            self.error_type, self.status_code = ExceptionType.NETWORK, None

    def __repr__(self):
        return f"{type(self).__name__}({str(self)!r})"

    return type(name, bases, {"__init__": __init__, "__repr__": __repr__, "__module__": __name__})


# --- Redis ----------------------------------------------------------------------------

def redis_client(db: int = 0, decode_responses: bool = True, socket_timeout: float = timeouts.REPLY,
                 ep: Endpoints | None = None, **options):
    """A redis.Redis with short timeouts and no hidden retries.

    Blocking commands (BRPOP, BLMOVE, XREAD BLOCK) must block for less than
    `socket_timeout`; pass a larger socket_timeout for a longer block.
    Connection failures raise RedisUnavailable naming the address and the fix.
    """
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    ep = ep or current()
    client = _course_redis_class()(
        host=ep.host,
        port=ep.ports["redis"],
        db=db,
        decode_responses=decode_responses,
        socket_connect_timeout=timeouts.CONNECT,
        socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        **options,
    )
    client.endpoints = ep
    return client


BLOCKING_REDIS_COMMANDS = {"BRPOP", "BLPOP", "BLMOVE", "BRPOPLPUSH", "BLMPOP", "BZPOPMIN", "BZPOPMAX",
                           "BZMPOP", "XREAD", "XREADGROUP", "WAIT"}


@lru_cache(maxsize=None)
def _course_redis_class():
    import redis

    class CourseRedis(redis.Redis):
        """redis.Redis whose connection errors name the broker, its address and the fix."""

        endpoints: Endpoints | None = None

        def execute_command(self, *args, **kwargs):
            try:
                return super().execute_command(*args, **kwargs)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                if isinstance(exc, BrokerUnavailable):
                    raise
                reason = _short(exc)
                command = str(args[0]).upper() if args else ""
                if isinstance(exc, redis.exceptions.TimeoutError) and command in BLOCKING_REDIS_COMMANDS:
                    timeout = self.connection_pool.connection_kwargs.get("socket_timeout")
                    reason = (f"no reply to {command} within socket_timeout={timeout} s; a blocking command must "
                              "block for less than the client's socket_timeout, or Redis is frozen")
                raise unavailable("redis", reason, self.endpoints) from exc

    return CourseRedis


# --- RabbitMQ -------------------------------------------------------------------------

def rabbit_parameters(ep: Endpoints | None = None, heartbeat: int = 30):
    import pika

    ep = ep or current()
    return pika.ConnectionParameters(
        host=ep.host,
        port=ep.ports["amqp"],
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=timeouts.CONNECT,
        stack_timeout=timeouts.REPLY,  # the whole connect: TCP + AMQP handshake (milliseconds when healthy)
        blocked_connection_timeout=10,  # a broker under memory alarm must not block us forever
        heartbeat=heartbeat,
    )


def rabbit_connection(ep: Endpoints | None = None, heartbeat: int = 30):
    """A pika.BlockingConnection that fails within seconds when RabbitMQ is down or frozen."""
    import pika
    import pika.adapters.utils.connection_workflow
    import pika.exceptions

    ep = ep or current()
    try:
        return pika.BlockingConnection(rabbit_parameters(ep, heartbeat=heartbeat))
    except (pika.exceptions.AMQPError, pika.adapters.utils.connection_workflow.AMQPConnectorException) as exc:
        # a refused port raises AMQPConnectionError, a frozen broker a handshake timeout
        raise unavailable("rabbitmq", _short(exc) or type(exc).__name__, ep) from exc


def rabbit_api(path: str, method: str = "GET", body: dict | None = None, ep: Endpoints | None = None):
    """Call RabbitMQ's management HTTP API (the source of truth for queue depths and bindings)."""
    ep = ep or current()
    url = f"{ep.rabbitmq_api}/{path.lstrip('/')}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeouts.HTTP) as response:
            payload = response.read()
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError) as exc:
        address = f"{ep.host}:{ep.ports['rabbitmq_management']} (management API)"
        raise unavailable("rabbitmq", _short(getattr(exc, "reason", exc)), ep, address=address) from exc
    return json.loads(payload) if payload else None


# --- Kafka ----------------------------------------------------------------------------

def _kafka_base(ep: Endpoints) -> dict:
    return {
        "bootstrap.servers": ep.kafka_bootstrap,
        "socket.connection.setup.timeout.ms": int(timeouts.CONNECT * 1000),
        "socket.timeout.ms": int(timeouts.REPLY * 1000 * 2),
        # librdkafka logs every refused connection to stderr; keep errors only.
        "log_level": 3,
    }


def kafka_check(ep: Endpoints | None = None):
    """One metadata request: the broker's own answer that it is up. Returns the metadata."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    ep = ep or current()
    admin = AdminClient({**_kafka_base(ep), "log_level": 0})
    try:
        return admin.list_topics(timeout=timeouts.REPLY)
    except KafkaException as exc:
        raise unavailable("kafka", _short(exc.args[0].str() if exc.args else exc), ep) from exc


def kafka_admin(ep: Endpoints | None = None, **config):
    from confluent_kafka.admin import AdminClient

    ep = ep or current()
    kafka_check(ep)
    return AdminClient({**_kafka_base(ep), **config})


def kafka_producer(ep: Endpoints | None = None, **config):
    """A confluent_kafka.Producer that gives up on a message after 10 s instead of 5 minutes.
    Remember: produce() only queues; call flush(timeout) before you expect the broker to have it."""
    from confluent_kafka import Producer

    ep = ep or current()
    kafka_check(ep)
    # librdkafka refuses a linger longer than the delivery timeout: keep the timeout 10 s past any linger
    linger_ms = int(config.get("linger.ms", 5))
    return Producer({**_kafka_base(ep), "message.timeout.ms": max(10000, linger_ms + 10000), **config})


def kafka_consumer(group_id: str, ep: Endpoints | None = None, **config):
    """A confluent_kafka.Consumer in `group_id`, reading from the earliest offset unless told otherwise."""
    from confluent_kafka import Consumer

    ep = ep or current()
    kafka_check(ep)
    defaults = {
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,  # the broker's minimum: a crashed member is noticed quickly
        "heartbeat.interval.ms": 1000,
    }
    if config.get("group.protocol") == "consumer":
        # the KIP-848 protocol: session and heartbeat are set by the broker, the client may not set them
        del defaults["session.timeout.ms"], defaults["heartbeat.interval.ms"]
    return Consumer({**_kafka_base(ep), **defaults, **config})


def kafka_share_consumer(group_id: str, ep: Endpoints | None = None, **config):
    """A confluent_kafka.ShareConsumer (KIP-932 share group `group_id`), explicit acknowledgement unless told
    otherwise. Where a new share group starts is a GROUP config (share.auto.offset.reset, default latest),
    not a client setting: see kafka_tools.set_group_config."""
    from confluent_kafka import ShareConsumer

    ep = ep or current()
    kafka_check(ep)
    defaults = {"group.id": group_id, "share.acknowledgement.mode": "explicit"}
    return ShareConsumer({**_kafka_base(ep), **defaults, **config})


def _short(exc) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
