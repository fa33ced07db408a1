"""The `guest` marker as developers use it, in a pytest of its own: deselected here, run in the
guest, failed there when a feature named is missing, and a wrong use refused by name."""
import json
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
CASES = """
import pytest

@pytest.mark.guest(needs=["netem"])
def test_needs_netem(kernel_features):
    assert kernel_features.has("netem")

@pytest.mark.guest(host=True)
def test_everywhere():
    pass

def test_plain():
    pass
"""


def run_pytest(tmp_path, cases, features=None):
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["guest.plugin"]\n')
    (tmp_path / "test_cases.py").write_text(cases)
    env = {"PYTHONPATH": str(TESTS), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if features is not None:
        path = tmp_path / "features.json"
        path.write_text(json.dumps(features))
        env["GUEST_KERNEL_FEATURES"] = str(path)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


def test_on_this_machine_guest_only_tests_are_deselected_and_the_summary_says_where_they_run(tmp_path):
    proc = run_pytest(tmp_path, CASES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed, 1 deselected" in proc.stdout
    assert "1 guest-only tests not run on this kernel: `make test-guest` runs them" in proc.stdout


def test_in_the_guest_a_missing_feature_fails_the_test_naming_it_and_why(tmp_path):
    without_netem = {"kernel": "6.1.0-test", "features": {"netem": False, "cake": True},
                     "errors": {"netem": "tc qdisc add dev f2 root netem: Error: Specified qdisc kind is unknown."}}
    proc = run_pytest(tmp_path, CASES, features=without_netem)
    assert proc.returncode == 1, proc.stdout
    assert "ERROR test_cases.py::test_needs_netem" in proc.stdout  # failed in its setup
    assert "kernel 6.1.0-test lacks netem: tc qdisc add dev f2 root netem: Error" in proc.stdout
    assert "2 passed" in proc.stdout
    with_netem = dict(without_netem, features={"netem": True})
    assert run_pytest(tmp_path, CASES, features=with_netem).returncode == 0


def test_an_unknown_feature_or_argument_is_refused_by_name(tmp_path):
    proc = run_pytest(tmp_path, CASES.replace('needs=["netem"]', 'needs=["netm"]'))
    assert proc.returncode == 4, proc.stdout + proc.stderr  # usage error, nothing run
    assert "test_needs_netem: @pytest.mark.guest(needs=['netm'])" in proc.stdout + proc.stderr
    proc = run_pytest(tmp_path, CASES.replace("host=True", "hots=True"))
    assert proc.returncode == 4 and "takes only needs=[...] and host=True" in proc.stdout + proc.stderr
