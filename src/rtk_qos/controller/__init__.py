"""`rtk-qos controller`: the operator's service that watches and steers a fleet over RTK MQTT v1.

It speaks to agents only over MQTT with `protocol/` (never imports agent/ or commands/).
"""
