"""A fleet of gateways: each a shard of one plant's devices with a stable id (``plan``), reporting itself in
one retained status message (``message``, built by ``member``), watched with ``edge-gateway fleet status``
(``view``). Protocol-free: the MQTT sink publishes the message and reads the fleet's back."""
