"""Payload encoding of one spooled batch: columnar ``marshal``.

A batch becomes one tuple of columns (``zip(*samples)``), the quality column packed as ``bytes``,
written with ``marshal`` (format version 4). The ninth column (``server_ts``) is written only when a
sample of the batch has one, so batches without it keep the original eight-column layout, and payloads
written before the column existed decode unchanged. Measured on one core with 100-sample batches: encode about
3.9 M samples/s, decode about 2.5 M samples/s; JSON was 2.5x slower to encode and a third larger.
Strings shared between samples (device, tag, unit) are written once per batch thanks to marshal's
back-references.

Why marshal and not pickle: ``marshal.loads`` only builds plain values (it never imports or calls
anything), so a spool file cannot execute code. It is not hardened against deliberately malformed
input, but the file belongs to the gateway; a damaged payload raises ``DecodeError`` and is skipped.
Format version 4 has been readable by every Python since 3.4, and ``meta.codec`` names this format so a
future change can migrate.
"""

from __future__ import annotations

import marshal
import numbers
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from gateway.errors import GatewayError
from gateway.model import Quality, Sample
from gateway.samples import from_fields

CODEC = "marshal-columns-1"
_MARSHAL_VERSION = 4
_QUALITY = tuple(Quality)  # index == value: bytes iterate as ints, so decoding is one tuple lookup
_PLAIN = (float, int, bool, str, type(None))
_BASE_COLUMNS = 8  # columns every payload has; server_ts follows only when some sample carries one


class EncodeError(GatewayError):
    """A batch holds a value the spool cannot store (neither number, bool, str nor None)."""


class DecodeError(GatewayError):
    """A stored payload is damaged."""


def encode(samples: Sequence[Sample]) -> bytes:
    cols: list[Any] = list(zip(*samples, strict=True))
    if cols and not any(cols[_BASE_COLUMNS]):
        del cols[_BASE_COLUMNS:]
    try:
        cols[3] = bytes(cols[3])
        return marshal.dumps(tuple(cols), _MARSHAL_VERSION)
    except (ValueError, TypeError):
        # Rare: a subclass (IntEnum, numpy scalar) somewhere. Normalise this batch once, slowly.
        return marshal.dumps(_normalised(samples), _MARSHAL_VERSION)


def decode(payload: bytes, n: int | None) -> list[Sample]:
    """Rebuild the samples; ``n`` (stored beside the payload) catches truncated or mismatched columns
    (``None``: a payload stored without its count, such as a dead letter's)."""
    try:
        cols = marshal.loads(payload)
        device, tag, value, quality, status, source_ts, gateway_ts, unit = cols[:_BASE_COLUMNS]
        server_ts = cols[_BASE_COLUMNS] if len(cols) > _BASE_COLUMNS else repeat(0, len(device))
        samples = list(map(from_fields, zip(
            device, tag, value, map(_QUALITY.__getitem__, quality), status, source_ts, gateway_ts, unit,
            server_ts, strict=True,
        )))
    except (ValueError, TypeError, EOFError, IndexError) as exc:
        raise DecodeError(f"damaged spool payload: {exc}") from exc
    if n is not None and len(samples) != n:
        raise DecodeError(f"damaged spool payload: {len(samples)} samples, expected {n}")
    return samples


def _normalised(samples: Sequence[Sample]) -> tuple[Any, ...]:
    try:
        quality = bytes(Quality(q) for q in (s.quality for s in samples))
    except ValueError as exc:
        raise EncodeError(f"invalid quality: {exc}") from exc
    return (
        tuple(_text(s.device) for s in samples),
        tuple(_text(s.tag) for s in samples),
        tuple(_value(s.value) for s in samples),
        quality,
        tuple(_integer(s.status) for s in samples),
        tuple(_integer(s.source_ts) for s in samples),
        tuple(_integer(s.gateway_ts) for s in samples),
        tuple(None if s.unit is None else _text(s.unit) for s in samples),
        tuple(_integer(s.server_ts) for s in samples),
    )


def _value(v: object) -> object:
    if type(v) in _PLAIN:
        return v
    if isinstance(v, list | tuple):  # an array or matrix: nested lists of plain values
        return [_value(x) for x in v]
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    if isinstance(v, str):
        return str(v)
    raise EncodeError(f"unsupported sample value type {type(v).__name__}")


def _integer(v: object) -> int:
    if isinstance(v, numbers.Integral):
        return int(v)
    raise EncodeError(f"expected an integer, got {type(v).__name__}")


def _text(v: object) -> str:
    if isinstance(v, str):
        return str(v)
    raise EncodeError(f"expected a string, got {type(v).__name__}")
