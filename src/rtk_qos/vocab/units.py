"""Unit conversions and statistical constants used in more than one place."""

BITS_PER_MBIT = 1_000_000  # network rates are decimal: 1 Mbit/s = 10^6 bit/s

# The median absolute deviation of a normal distribution times this is its standard deviation
# (1 / Phi^-1(3/4)). The native core's copy (RTK_MAD_TO_SIGMA, native/stats.h) is checked
# against this one by tests/vocab.
MAD_TO_SIGMA = 1.4826


def mbps(bytes_per_s: float) -> float:
    """A byte rate in Mbit/s."""
    return bytes_per_s * 8 / BITS_PER_MBIT
