"""The MQTT agent: session, dispatch, outbox, lifecycle messages (see core.Agent)."""
