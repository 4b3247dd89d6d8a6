"""End-to-end benchmark: Modbus and OPC-UA simulators -> gateway -> MQTT and VictoriaMetrics -> a test subscriber.

``scenario`` runs one point or the sweep, ``layout`` splits the tags over simulator processes and writes the
files, ``report`` writes the Markdown and the plot. The test subscriber (paho) is
``bench.subscriber``: gateway/ imports no protocol library.
"""
