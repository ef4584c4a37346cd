from brokerlab.endpoints import BASE_PORTS, TEST_PORT_OFFSET, Endpoints


def test_defaults_are_the_brokers_own_ports_on_loopback(monkeypatch):
    for name in list(BASE_PORTS) + ["PORT_OFFSET", "HOST"]:
        monkeypatch.delenv(f"BROKERLAB_{name.upper()}_PORT" if name != "PORT_OFFSET" and name != "HOST"
                           else f"BROKERLAB_{name}", raising=False)
    ep = Endpoints.from_env()
    assert ep.host == "127.0.0.1"
    assert ep.redis_url == "redis://127.0.0.1:6379/0"
    assert ep.kafka_bootstrap == "127.0.0.1:9092"
    assert ep.rabbitmq_api == "http://127.0.0.1:15672/api"
    assert ep.start_command().startswith("python -m brokerlab stack up")


def test_one_offset_moves_every_port_and_the_start_command(monkeypatch):
    monkeypatch.setenv("BROKERLAB_PORT_OFFSET", "100")
    monkeypatch.delenv("BROKERLAB_REDIS_PORT", raising=False)
    ep = Endpoints.from_env()
    assert ep.ports == {name: base + 100 for name, base in BASE_PORTS.items()}
    assert ep.start_command().startswith("BROKERLAB_PORT_OFFSET=100 python -m brokerlab stack up")


def test_test_offset_does_not_collide_with_default_ports():
    default = set(Endpoints.from_env(offset=0).ports.values())
    test = set(Endpoints.from_env(offset=TEST_PORT_OFFSET).ports.values())
    assert not default & test
    assert len(test) == len(BASE_PORTS)


def test_single_port_override(monkeypatch):
    monkeypatch.setenv("BROKERLAB_REDIS_PORT", "7777")
    assert Endpoints.from_env(offset=0).redis_url == "redis://127.0.0.1:7777/0"


def test_bad_offset_is_explained(monkeypatch):
    monkeypatch.setenv("BROKERLAB_PORT_OFFSET", "ten")
    try:
        Endpoints.from_env()
    except ValueError as exc:
        assert "BROKERLAB_PORT_OFFSET" in str(exc)
    else:
        raise AssertionError("a non-numeric offset was accepted")
