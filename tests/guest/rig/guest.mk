# The router-kernel guest rig (tests/guest): Debian's kernel under qemu runs the tests marked
# `guest`. Included by the top-level Makefile; `make test` runs test-guest after pytest.
GUEST_RIG := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
GUEST_BUILD ?= build/guest
# Extra pytest arguments in the guest, e.g. GUEST_ARGS='-k netem -x'; GUEST_TESTS replaces the
# selection (default: every test marked guest).
GUEST_ARGS ?=
GUEST_TESTS ?= -m guest tests
GUEST_REPORT ?= $(GUEST_BUILD)/report.json
# Seconds for the whole guest run (run.py --help lists the other limits).
GUEST_TIMEOUT ?= 1200
# The rig's packages: a command or file that shows each is installed, and the package.
GUEST_PACKAGES := /usr/bin/qemu-system-x86_64:qemu-system-x86 /sbin/depmod:kmod

.PHONY: test-guest guest-packages

test-guest: $(VENV)/.built guest-packages
	$(PY) $(GUEST_RIG)/run.py --build $(GUEST_BUILD) --report $(GUEST_REPORT) --timeout $(GUEST_TIMEOUT) -- $(GUEST_TESTS) $(GUEST_ARGS)

# apt-get only what is missing (a kernel counts when /boot has one whose modules are installed),
# so later runs stay offline; each step has a time limit.
guest-packages:
	@missing=""; \
	for pair in $(GUEST_PACKAGES); do [ -e "$${pair%%:*}" ] || missing="$$missing $${pair##*:}"; done; \
	if [ ! -e /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then missing="$$missing busybox-static"; fi; \
	ls /lib/modules/*/modules.dep 2>/dev/null | while read -r dep; do \
	  release=$$(basename "$$(dirname "$$dep")"); [ -e "/boot/vmlinuz-$$release" ] && echo "$$release"; done \
	  | grep -q . || missing="$$missing linux-image-amd64"; \
	if [ -n "$$missing" ]; then \
	  echo "installing for the guest rig:$$missing"; \
	  $(SUDO) timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) timeout 1200 \
	    apt-get install -y -qq --no-install-recommends $$missing; \
	fi
