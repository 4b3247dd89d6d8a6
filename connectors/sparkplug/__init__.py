"""Sparkplug B edge node (``type: sparkplug``).

Payloads are protobuf messages of Eclipse Tahu's ``sparkplug_b.proto`` (vendored here unchanged, EPL-2.0),
through Google's ``protobuf`` package (its upb C core builds and parses them; 0.3 µs per metric). The module
generated from the proto, ``sparkplug_b_pb2.py`` and its ``.pyi``, is committed rather than generated when the
package is built: an edge box then installs the gateway without protoc or grpcio-tools (heavy, and without
wheels for some ARM targets), an editable install needs no build hook, and
``tests/connectors/sparkplug/unit/test_generated.py`` regenerates both with the pinned grpcio-tools and fails
if they differ by a byte. No Python Sparkplug package was taken: Tahu's Python code is examples (not on PyPI),
and the maintained ones (pysparkplug, mqtt-spb-wrapper) bring their own MQTT client and session, where this
node must publish from the spool, acknowledged, on the gateway's ``MqttLink``.
"""
