"""Exceptions shared by the engine and the plug-ins."""

from __future__ import annotations

from gateway.redact import redact


class GatewayError(Exception):
    """Base class of the gateway's own errors."""


class ConfigError(GatewayError):
    """A configuration is invalid; ``problems`` holds one ``FILE: dotted.path: message`` line each."""

    def __init__(self, problems: list[str]) -> None:
        # a bad URL is quoted back: never with its password
        problems = [redact(p) for p in problems]
        super().__init__("\n".join(problems))
        self.problems = problems


class SinkError(GatewayError):
    """A sink could not deliver a batch."""


class RetryableSinkError(SinkError):
    """The uplink is down or busy: keep the batch and retry later.

    ``retry_after`` (seconds) honours a server's hint such as HTTP ``Retry-After``.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSinkError(SinkError):
    """The uplink rejected the batch for good (malformed data). The batch is dead-lettered, not retried."""


class WriteError(GatewayError):
    """A write to a device was refused (tag not writable, out of range, device error)."""


class DeviceNotConnected(WriteError):
    """The device has no link right now; the same write may succeed once it connects."""


class HttpPortTaken(GatewayError):
    """The configured HTTP port is in use (most likely by another gateway)."""
