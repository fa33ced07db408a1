"""rtk-qos: the QoS monitoring agent for routers (RTK MQTT v1)."""
__version__ = "0.1.0"
