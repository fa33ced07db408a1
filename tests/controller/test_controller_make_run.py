"""`make run` with nothing configured: broker, agent and controller come up together and the printed
URL answers. Run in a namespace of its own, so the agent's gateway probe stays on this machine."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FETCH = "import json, sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"


def test_make_run_brings_up_broker_agent_and_controller(agent_host, tmp_path):
    log = open(tmp_path / "make-run.log", "w+")
    proc = agent_host.ns.popen("make", "-s", "-C", str(REPO), "run", f"RUN_STATE={tmp_path}/state",
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None:
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "make-run.log").read_text()
            match = re.search(r"API\s+(http://\S+)/api/qos/overview", (tmp_path / "make-run.log").read_text())
            url = match.group(1) if match else time.sleep(0.2)
        assert url == "http://127.0.0.1:8080"  # localhost only, by default
        while True:
            devices = json.loads(agent_host.ns.run(sys.executable, "-c", FETCH, url + "/api/devices").stdout)["devices"]
            if devices and devices[0]["status"] == "online":
                break
            assert time.monotonic() < deadline, devices
            time.sleep(0.5)
        assert devices[0]["device_id"] == agent_host.device_id
        overview = json.loads(agent_host.ns.run(sys.executable, "-c", FETCH, url + "/api/qos/overview").stdout)
        assert overview["active_monitoring_sessions"] == 0
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) is not None
    text = (tmp_path / "make-run.log").read_text()
    assert "started mosquitto on 127.0.0.1:1883" in text and "Traceback" not in text, text
