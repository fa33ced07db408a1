"""The small vocabulary every part of rtk-qos shares: severity, threshold episodes, units.

It imports nothing of ours, so the agent, the commands, the controller and shaping can all use it
without depending on each other (DESIGN.md).
"""
