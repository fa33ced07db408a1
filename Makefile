# The two commands a new user needs: `make run` and `make test`. Both install what they
# need first (system packages through apt-get where missing, then a venv with the package).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# command:debian-package pairs the agent and its tests use (and PostgreSQL, off PATH, for the
# controller's store tests: checked by its initdb below).
SYSTEM_TOOLS := mosquitto:mosquitto ip:iproute2 ping:iputils-ping nft:nftables gcc:gcc npm:npm \
	chromium:chromium iperf3:iperf3 ethtool:ethtool
NATIVE_SRC := $(wildcard native/*.c native/*.h src/rtk_qos/*.pxi) src/rtk_qos/_core.pyx src/rtk_qos/_native.pxd setup.py
RUN_ARGS ?=
CONTROLLER_ARGS ?=
# The dashboard's chart library: from the npm registry at this pinned version, its dist files copied
# into the package data at build time (never committed: .gitignore).
UPLOT_VERSION := 1.6.32
WEB_VENDOR := src/rtk_qos/controller/web/static/vendor
WEB_VENDOR_FILES := $(WEB_VENDOR)/uPlot.iife.min.js $(WEB_VENDOR)/uPlot.min.css

.PHONY: run test test-guest bench native native-test deps clean cross cross-ci

include cross/targets.mk
include tests/guest/rig/guest.mk
# In `make test`: the C suite on one ARM and one big-endian MIPS target, and the wheel built and
# tested in a Debian rootfs for one ARM and one MIPS arch. `make cross` runs every target.
CROSS_CI_WHEELS ?= aarch64 mipsel

# The agent and the controller on their embedded defaults: the agent starts a local mosquitto
# when no broker is configured and none answers on localhost:1883; the controller (which retries
# until the broker answers) prints its URL. Ctrl-C stops both.
RUN_STATE ?= $(CURDIR)/.state
run: $(VENV)/.built
	@trap 'kill $$agent 2>/dev/null; wait $$agent' EXIT; \
	$(VENV)/bin/rtk-qos agent --state-dir $(RUN_STATE)/agent $(RUN_ARGS) & agent=$$!; \
	$(VENV)/bin/rtk-qos controller --state-dir $(RUN_STATE)/controller $(CONTROLLER_ARGS)

# After pytest, the guest (one emulated CPU) and the cross checks (mostly one core) run side by
# side: the guest's packages are installed first, so only the cross scripts run apt-get after;
# the guest's console goes to a file printed when both have ended; either failing fails the test.
GUEST_CONSOLE ?= build/guest-console.log
test: $(VENV)/.built native-test
	$(PY) -m pytest -q tests
	$(MAKE) guest-packages
	@mkdir -p $(dir $(GUEST_CONSOLE)); \
	$(MAKE) test-guest >$(GUEST_CONSOLE) 2>&1 & guest=$$!; \
	$(MAKE) cross-ci; cross=$$?; \
	wait $$guest; status=$$?; \
	echo "== the router-kernel guest (console: $(GUEST_CONSOLE))"; cat $(GUEST_CONSOLE); \
	echo "== guest: status $$status; cross checks: status $$cross"; \
	[ $$status = 0 ] && [ $$cross = 0 ]

cross-ci: cross-native-ci $(addprefix cross-wheel-test-,$(CROSS_CI_WHEELS))

cross: cross-native cross-wheel-tests

bench: $(VENV)/.built
	$(PY) bench/run.py --output bench/report.json
	$(PY) bench/agent.py --output bench/agent-report.json
	$(PY) bench/probe.py --output bench/probe-report.json
	$(PY) bench/controller.py --output bench/controller-report.json
	$(PY) bench/dashboard.py --output bench/dashboard-report.json
	$(PY) bench/anomaly.py --output bench/anomaly-report.json
	$(PY) bench/noise_alarms.py --output bench/noise-alarms-report.json
	$(PY) bench/iforest.py --output bench/iforest-report.json
	$(PY) bench/nab.py --halves --generated --sweep window=256,512,1024 --sweep smooth_alpha=0.05,0.1,0.2 --output bench/nab-report.json
	$(PY) bench/shaping.py --output bench/shaping-report.json
	$(PY) bench/autorate.py --output bench/autorate-report.json

native-test:
	$(MAKE) -C native test

native: $(VENV)/.built

deps: $(VENV)/.deps

$(VENV)/.system:
	@missing=""; \
	for pair in $(SYSTEM_TOOLS); do \
	  tool=$${pair%%:*}; pkg=$${pair##*:}; \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$tool >/dev/null || missing="$$missing $$pkg"; \
	done; \
	python3 -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
	  || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	python3 -m venv $(VENV)
	touch $@

$(WEB_VENDOR_FILES) &: $(VENV)/.system
	npm install --prefix build/npm --no-save --no-audit --no-fund --silent uplot@$(UPLOT_VERSION)
	mkdir -p $(WEB_VENDOR)
	cp build/npm/node_modules/uplot/dist/uPlot.iife.min.js build/npm/node_modules/uplot/dist/uPlot.min.css $(WEB_VENDOR)/

$(VENV)/.deps: $(VENV)/.system pyproject.toml
	$(PY) -m pip install -q --upgrade pip "setuptools>=65" wheel "Cython>=3.0"
	$(PY) -m pip install -q -e '.[test]' --no-build-isolation
	touch $@

$(VENV)/.built: $(VENV)/.deps $(NATIVE_SRC) $(WEB_VENDOR_FILES)
	$(PY) setup.py -q build_clib build_ext --inplace
	touch $@

clean:
	rm -rf build src/rtk_qos/_core.c src/rtk_qos/_core*.so $(WEB_VENDOR)
	$(MAKE) -C native clean
