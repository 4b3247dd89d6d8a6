"""Protocol-free engine of the edge gateway.

House rule: nothing under ``gateway/`` imports a protocol library (asyncua, pymodbus, paho,
influxdb_client); those live behind adapters in ``connectors/``.
"""

__version__ = "0.1.0"
