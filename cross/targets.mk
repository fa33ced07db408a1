# Cross-compilation targets for router CPUs; included by the top-level Makefile.
# Everything downloaded or built lands in CROSS_CACHE (default cross/.cache/).
CROSS_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
CROSS_CACHE ?= $(abspath $(CROSS_DIR)/.cache)
export CROSS_CACHE

CROSS_ARCHS := aarch64 armv7hf mipsel mips
CROSS_LIBCS := glibc musl
CROSS_TARGETS := $(foreach a,$(CROSS_ARCHS),$(foreach l,$(CROSS_LIBCS),$(a)-$(l)))
# One ARM and one big-endian MIPS target: enough to catch word-size and endian bugs in CI.
CROSS_CI_TARGETS ?= aarch64-glibc mips-musl
# Debian bookworm has Python for these; big-endian mips was dropped as a Debian port.
CROSS_WHEEL_ARCHS := aarch64 armv7 mipsel

.PHONY: cross-native cross-native-ci cross-wheels cross-wheel-tests cross-clean \
	$(addprefix cross-native-,$(CROSS_TARGETS)) \
	$(addprefix cross-wheel-,$(CROSS_WHEEL_ARCHS)) \
	$(addprefix cross-wheel-test-,$(CROSS_WHEEL_ARCHS)) \
	$(addprefix cross-rootfs-,$(CROSS_WHEEL_ARCHS))

cross-native: $(addprefix cross-native-,$(CROSS_TARGETS))
cross-native-ci: $(addprefix cross-native-,$(CROSS_CI_TARGETS))

$(addprefix cross-native-,$(CROSS_TARGETS)): cross-native-%:
	$(CROSS_DIR)/native.sh $*

cross-wheels: $(addprefix cross-wheel-,$(CROSS_WHEEL_ARCHS))
cross-wheel-tests: $(addprefix cross-wheel-test-,$(CROSS_WHEEL_ARCHS))

$(addprefix cross-wheel-,$(CROSS_WHEEL_ARCHS)): cross-wheel-%:
	$(CROSS_DIR)/wheel.sh $*

$(addprefix cross-rootfs-,$(CROSS_WHEEL_ARCHS)): cross-rootfs-%:
	$(CROSS_DIR)/rootfs.sh $*

# Build the wheel, make the Debian rootfs, then import and run the package inside it.
$(addprefix cross-wheel-test-,$(CROSS_WHEEL_ARCHS)): cross-wheel-test-%: cross-wheel-% cross-rootfs-%
	$(CROSS_DIR)/test_wheel.sh $*

cross-clean:
	rm -rf $(CROSS_CACHE)/native $(CROSS_CACHE)/dist $(CROSS_CACHE)/wheel-build
