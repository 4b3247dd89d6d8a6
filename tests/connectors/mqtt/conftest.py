"""Fixtures shared by the MQTT connector's unit and integration tests."""

from __future__ import annotations

from typing import Any

import pytest
from paho.mqtt import _packet


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """PUBACKs that went through paho's own decoder (the link's short way bypasses it)."""
    seen: list[bytes] = []
    original = _packet.decode_puback

    def spy(header: int, packet: bytes | bytearray, protocol: Any) -> Any:
        seen.append(bytes(packet))
        return original(header, packet, protocol)

    monkeypatch.setattr(_packet, "decode_puback", spy)
    return seen
