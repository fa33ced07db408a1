"""Configuration: defaults < TOML < environment < flags, and clear errors."""
import pytest

from rtk_qos.agent.config import ConfigError, load


def test_precedence_and_types(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text('device_id = "aabbccddeeff"\ntenant = "acme"\n[broker]\nhost = "mq.lan"\nport = 8883\n'
                    '[limits]\nmax_running = 2\n')
    config = load(str(path), environ={"RTK_QOS_BROKER_PORT": "1884", "RTK_QOS_SITE": "hq-1",
                                      "RTK_QOS_LIMITS_MAX_QUEUED": "3", "RTK_QOS_SUBSCRIBE_BROADCAST": "false"},
                  flags={"broker": {"host": "10.0.0.2"}})
    assert config["broker"]["host"] == "10.0.0.2" and config["broker"]["port"] == 1884
    assert (config["tenant"], config["site"]) == ("acme", "hq-1")
    assert config["limits"]["max_running"] == 2 and config["limits"]["max_queued"] == 3
    assert config["subscribe_broadcast"] is False
    assert config["broker"]["client_id"] == "rtk-qos-aabbccddeeff" and config["_broker_configured"]


def test_device_id_defaults_to_the_primary_mac(netns_pair):
    import json
    import sys
    out = netns_pair.a.run(sys.executable, "-c", "import json; from rtk_qos.agent.config import load; "
                           "c = load(environ={}); print(json.dumps([c['device_id'], c['broker']['host'], "
                           "c['_broker_configured']]))").stdout
    mac = netns_pair.a.run("cat", f"/sys/class/net/{netns_pair.a_if}/address").stdout.strip()
    assert json.loads(out) == [mac.replace(":", ""), "localhost", False]


@pytest.mark.parametrize("text, env, message", [
    ('[broker]\nprot = "5"\n', {}, "broker.prot: unknown setting"),
    ('device_id = "AA:BB"\n', {}, "device_id: 'AA:BB' does not match"),
    ('[limits]\nmax_running = "four"\n', {}, "limits.max_running: expected integer, got string"),
    ('tenant = "x"\n', {}, "tenant: 'x' does not match"),
    ('[broker\n', {}, "agent.toml"),
    ('device_id = "aabbccddeeff"\n', {"RTK_QOS_BROKER_PORT": "many"}, "broker.port: 'many' is not an integer"),
    ('device_id = "aabbccddeeff"\n[broker]\nprotocol = "4"\n', {}, "broker.protocol: '4' is not 3.1.1 or 5"),
    ('[history]\nml_backend = "torch"\n', {}, "history.ml_backend: 'torch' is not native or sklearn"),
    ('device_id = "aabbccddeeff"\n[history]\nmax_interfaces = 65\n', {}, "history.max_interfaces: 65 is above 64"),
])
def test_bad_settings_are_named(tmp_path, text, env, message):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load(str(path), environ=env)
    assert message in str(info.value)


def test_the_example_file_documents_the_defaults():
    from pathlib import Path
    example = Path(__file__).resolve().parents[2] / "cross" / "agent.example.toml"
    env = {"RTK_QOS_DEVICE_ID": "aabbccddeeff"}
    documented, defaults = load(str(example), environ=env), load(None, environ=env)
    documented.pop("_broker_configured"), defaults.pop("_broker_configured")
    assert documented == defaults
