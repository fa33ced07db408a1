"""The import check of bench/agent.py: it reads a real `python -X importtime` log of the agent's
modules and must fail when one of them pulls in a forbidden package, as a shaping module that
imported pyroute2 at the top would."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import agent as bench_agent  # noqa: E402

AGENT_MODULES = "import rtk_qos.agent.session, rtk_qos.agent.core"


def _importtime_log(code: str, path: str = "") -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH", "")]))}
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stderr


def test_the_agent_modules_pass():
    log = _importtime_log(AGENT_MODULES)
    assert "paho" in bench_agent.imported_packages(log)
    assert bench_agent.import_problems(log) == []


def test_a_module_that_imports_a_forbidden_package_fails_the_check(tmp_path):
    (tmp_path / "shaping_plugin.py").write_text("import numpy  # as a top-level pyroute2 import would\n")
    log = _importtime_log(AGENT_MODULES + ", shaping_plugin", str(tmp_path))
    assert bench_agent.import_problems(log) == ["numpy was imported by the agent"]


def test_a_log_without_the_positive_control_fails_the_check():
    # Without -X importtime (or with a changed log format) nothing is seen: that must not pass.
    assert bench_agent.import_problems("") == ["paho is not in the import log: the check cannot see the agent's imports"]
