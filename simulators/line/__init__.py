"""A simulated production line: a YAML scenario of machines with state machines and state-driven signals,
served by both the Modbus and the OPC-UA simulator from one model (``scenario`` -> ``points`` -> ``model``)."""
