"""The `guest` marker and the `kernel_features` fixture (loaded by tests/conftest.py).

    @pytest.mark.guest(needs=["cake", "ifb"])  runs only in the router-kernel guest (tests/guest/rig),
                                               and fails there if its kernel lacks a feature named
    @pytest.mark.guest(host=True)              kernel-facing: runs on this machine and again in the guest

`make test`'s pytest on this machine deselects the guest-only tests (this kernel lacks what they
need); `make test-guest`, which `make test` also runs, boots the guest and runs `pytest -m guest`
there. Feature names are those of tests/guest/features.py; `kernel_features` says what the
kernel a test runs on has (in the guest, what the rig probed at boot).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from guest import features as probe

IN_GUEST = bool(os.environ.get("GUEST_KERNEL_FEATURES"))
_deselected_here: list[str] = []


@dataclass(frozen=True)
class KernelFeatures:
    kernel: str
    present: frozenset
    errors: dict = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.present

    def missing(self, names) -> list[str]:
        return [n for n in names if n not in self.present]


_features: KernelFeatures | None = None


def kernel_features_now() -> KernelFeatures:
    global _features
    if _features is None:
        found = probe.probe()
        _features = KernelFeatures(found["kernel"], frozenset(n for n, ok in found["features"].items() if ok),
                                   found["errors"])
    return _features


@pytest.fixture(scope="session")
def kernel_features() -> KernelFeatures:
    return kernel_features_now()


def _guest_mark(item):
    mark = item.get_closest_marker("guest")
    if mark is None:
        return None
    unknown = set(mark.kwargs) - {"needs", "host"}
    if mark.args or unknown:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.guest takes only needs=[...] and host=True "
                                f"(got {mark.args or ''} {sorted(unknown) or ''})")
    needs = mark.kwargs.get("needs", ())
    if isinstance(needs, str) or any(n not in probe.FEATURES for n in needs):
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.guest(needs={needs!r}): a list of "
                                f"{', '.join(probe.FEATURES)}")
    return mark


def pytest_configure(config):
    config.addinivalue_line("markers", "guest(needs=[...], host=False): needs the router kernel of the guest rig "
                            "(tests/guest); host=True also runs it on this machine")


def pytest_collection_modifyitems(config, items):
    kept, deselected = [], []
    for item in items:
        mark = _guest_mark(item)
        if mark and not IN_GUEST and not mark.kwargs.get("host", False):
            deselected.append(item)
        else:
            kept.append(item)
    if deselected:
        _deselected_here.extend(item.nodeid for item in deselected)
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def pytest_runtest_setup(item):
    mark = item.get_closest_marker("guest")
    needs = mark.kwargs.get("needs", ()) if mark else ()
    if needs:
        found = kernel_features_now()
        missing = found.missing(needs)
        if missing:
            pytest.fail(f"kernel {found.kernel} lacks {', '.join(missing)}: "
                        + "; ".join(found.errors.get(n, "") for n in missing), pytrace=False)


def pytest_terminal_summary(terminalreporter):
    if _deselected_here:
        terminalreporter.write_line(f"{len(_deselected_here)} guest-only tests not run on this kernel: "
                                    "`make test-guest` runs them in the router-kernel guest")
