"""Collectors: one module per source of measurements (links, protocol counters, flows, probes).

Each reads the kernel directly, returns plain data, and says where a figure came
from or why it could not be read; none of them keeps state between calls.
"""
