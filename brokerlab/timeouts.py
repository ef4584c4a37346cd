"""The time limits every client and probe in the course uses, in seconds.

They are short on purpose: a broker on 127.0.0.1 answers in milliseconds, so a
silent one is stopped or frozen, and the learner should hear so within seconds.
"""
CONNECT = 2.0      # TCP connect and protocol handshake
REPLY = 3.0        # waiting for one reply (Redis command, AMQP handshake, Kafka metadata)
HTTP = 2.0         # RabbitMQ management API requests
PROBE_BUDGET = 4.5  # a whole health check, all brokers probed concurrently
