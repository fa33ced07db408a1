"""TLS with generated certificates (CA verification, client certificates), refused bad
certificates, username/password, and router-changing operations refused unless allowed."""
import subprocess
import time

import pytest

from mqtt_harness import online
from mqtt_harness import Broker


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(directory, name):
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory)


def _signed(directory, ca, name, san):
    (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=directory)


@pytest.fixture
def pki(tmp_path, agent_host):
    d = tmp_path / "pki"
    d.mkdir()
    _ca(d, "ca")
    _ca(d, "rogue-ca")
    san = f"IP:{agent_host.gateway},IP:127.0.0.1,DNS:localhost"
    _signed(d, "ca", "server", san)
    _signed(d, "rogue-ca", "rogue-server", san)
    _signed(d, "ca", "agent", "DNS:agent")
    return d


def _tls_broker(tmp_path, pki, cert="server"):
    work = tmp_path / f"broker-{cert}"
    work.mkdir()
    return Broker(work, tls={"ca": pki / "ca.crt", "cert": pki / f"{cert}.crt", "key": pki / f"{cert}.key"})


def _wait_log(agent, text, timeout=15):
    deadline = time.monotonic() + timeout
    while text not in agent.log():
        assert time.monotonic() < deadline, f"{text!r} not in agent log:\n{agent.log()[-2000:]}"
        time.sleep(0.2)


def test_tls_with_ca_verification_and_a_client_certificate(tmp_path, pki, start_agent):
    broker = _tls_broker(tmp_path, pki)
    try:
        agent = start_agent(broker, broker={"tls": True, "ca_file": str(pki / "ca.crt"),
                                            "cert_file": str(pki / "agent.crt"), "key_file": str(pki / "agent.key")})
        from mqtt_harness import Controller
        ctl = Controller(broker.plain_port)
        ctl.subscribe(f"{agent.base}/lwt")
        online(ctl, agent)
        ctl.close()
    finally:
        agent.stop()
        broker.stop()


def test_a_broker_certificate_from_another_ca_is_refused(tmp_path, pki, start_agent):
    broker = _tls_broker(tmp_path, pki, cert="rogue-server")
    try:
        agent = start_agent(broker, broker={"tls": True, "ca_file": str(pki / "ca.crt"),
                                            "cert_file": str(pki / "agent.crt"), "key_file": str(pki / "agent.key")})
        _wait_log(agent, "certificate verify failed")
        assert "connected to" not in agent.log()
        assert agent.proc.poll() is None  # keeps retrying with backoff, does not crash
    finally:
        agent.stop()
        broker.stop()


def test_the_broker_refuses_an_agent_without_a_client_certificate(tmp_path, pki, start_agent):
    broker = _tls_broker(tmp_path, pki)
    try:
        agent = start_agent(broker, broker={"tls": True, "ca_file": str(pki / "ca.crt")})
        _wait_log(agent, "reconnecting in")
        assert "connected to" not in agent.log()
    finally:
        agent.stop()
        broker.stop()


def test_username_and_password(tmp_path, start_agent):
    work = tmp_path / "auth-broker"
    work.mkdir()
    passwords = work / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "router", "s3cret"], check=True)
    broker = Broker(work, password_file=passwords)
    try:
        good = start_agent(broker, broker={"username": "router", "password": "s3cret"})
        _wait_log(good, "connected to")
        good.stop()
        bad = start_agent(broker, broker={"username": "router", "password": "wrong"})
        _wait_log(bad, "broker refused the connection")
    finally:
        broker.stop()
