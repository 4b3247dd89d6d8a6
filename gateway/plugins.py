"""Plug-in descriptors and the entry-point registry.

A plug-in is a small descriptor (kind, config model, factory) published under one of three
entry-point groups. Only the descriptors a config names are imported, so a box that uses Modbus never
loads asyncua; the factory imports the protocol adapter only when the component is built.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from gateway.config.base import SinkConfigBase, SourceConfigBase
from gateway.model import Sample, Value
from gateway.services import SERVICES_GROUP, ServicePlugin
from gateway.watch import ValueMaps

if TYPE_CHECKING:
    import structlog

    from gateway.config.site import SiteConfig
    from gateway.contracts import DeadLetters, Sink, Source
    from gateway.fleet.member import FleetMember
    from gateway.fleet.message import StatusQuery
    from gateway.metrics import Metrics

SOURCES_GROUP = "edge_gateway.sources"
SINKS_GROUP = "edge_gateway.sinks"
COMMANDS_GROUP = "edge_gateway.commands"


TagWriter = Callable[[str, str, str, Value], Awaitable[None]]
"""``writer(source, device, tag, value)``: write an engineering value to a running source's tag
(limits and scale/offset applied; raises ``gateway.errors.WriteError`` when refused)."""


async def _no_writes(source: str, device: str, tag: str, value: Value) -> None:
    from gateway.errors import WriteError

    raise WriteError("writes are not available here")


class _NoDeadLetters:
    """The default for a sink built by neither the runtime nor ``deadletters replay`` (both give their
    own): there is no spool to keep what it rejects, so say so loudly rather than lose it."""

    def reject(self, batch: int, samples: Sequence[Sample], error: str) -> None:
        from gateway.errors import GatewayError

        raise GatewayError(f"no dead-letter store here for {len(samples)} rejected samples ({error})")


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a factory gets besides its own config: shared services, never the whole runtime."""

    metrics: Metrics
    site: SiteConfig
    data_dir: str
    log: structlog.stdlib.BoundLogger
    writer: TagWriter = _no_writes
    dead_letters: DeadLetters = field(default_factory=_NoDeadLetters)
    """Sinks only: where samples the uplink refused for good go (``gateway.contracts.DeadLetters``)."""
    value_maps: Mapping[str, ValueMaps] = field(default_factory=dict)
    """Per source, the words of its tags' values (``states``, alarm severities): kept current across reloads."""
    gateway_id: str | None = None
    """``gateway.id`` when the config sets one (client ids of a fleet's gateways include it), else None."""
    fleet: FleetMember | None = None
    """This gateway in its fleet (id, instance, its status message); None where no gateway runs (a replay):
    a sink that publishes the gateway's status then publishes none."""


SrcCfg = TypeVar("SrcCfg", bound=SourceConfigBase)
SnkCfg = TypeVar("SnkCfg", bound=SinkConfigBase)


@dataclass(frozen=True, slots=True)
class SourcePlugin(Generic[SrcCfg]):
    kind: str
    config_model: type[SrcCfg]
    factory: Callable[[str, SrcCfg, BuildContext], Source]
    description: str = ""
    requires: tuple[str, ...] = ()
    """Top-level modules the factory imports (a protocol library), checked when a config names the kind."""
    extra: str = ""
    """The package extra that installs them (``pip install 'shopfloor-edge-gateway[<extra>]'``)."""


@dataclass(frozen=True, slots=True)
class SinkPlugin(Generic[SnkCfg]):
    kind: str
    config_model: type[SnkCfg]
    factory: Callable[[str, SnkCfg, BuildContext], Sink]
    description: str = ""
    requires: tuple[str, ...] = ()
    extra: str = ""
    read_status: Callable[[StatusQuery], list[tuple[str, bytes]]] | None = None
    """Optional, for a sink that publishes the gateway's status message (MQTT): read the retained messages
    on some topics back from its kind of uplink, ``(topic, payload)`` each (``edge-gateway fleet status``);
    raises ``gateway.errors.GatewayError`` with a one-line reason when the uplink cannot be reached."""


@dataclass(frozen=True, slots=True)
class CommandPlugin:
    """A CLI sub-command contributed by a connector or the simulators (``scan``, ``browse``, ...)."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    aliases: tuple[str, ...] = field(default=())
    requires: tuple[str, ...] = ()
    """Top-level modules ``run`` imports (a protocol library); without them the command says what to install."""
    extra: str = ""


class PluginError(LookupError):
    """An unknown kind, or an entry point that does not load to the expected descriptor."""


def _group(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def installed_kinds(group: str) -> list[str]:
    """Kinds published under ``group`` (read from metadata without importing anything) or registered."""
    return sorted(set(_group(group)) | {kind for g, kind in _registered if g == group})


_cache: dict[tuple[str, str], object] = {}
_registered: dict[tuple[str, str], object] = {}


@contextlib.contextmanager
def registered(*items: SourcePlugin[Any] | SinkPlugin[Any]) -> Iterator[None]:
    """Plug-ins available without an entry point for the duration of the block (tests, an application
    embedding the gateway); a registered kind wins over an installed one of the same name."""
    keys: list[tuple[str, str]] = []
    try:
        for item in items:
            key = (SOURCES_GROUP if isinstance(item, SourcePlugin) else SINKS_GROUP, item.kind)
            if key in _registered:
                raise PluginError(f"plug-in kind {item.kind!r} is already registered")
            _registered[key] = item
            keys.append(key)
        yield
    finally:
        for key in keys:
            _registered.pop(key, None)


DISTRIBUTION = "shopfloor-edge-gateway"


def missing_modules(modules: Iterable[str]) -> list[str]:
    """Those of ``modules`` that cannot be imported here (looked up, not imported; a dotted name's parent
    package is imported to look into it, and a missing parent means a missing module)."""
    return [m for m in modules if _missing(m)]


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:  # ``google.protobuf`` without any ``google`` package
        return True


def missing_requirement(plugin: SourcePlugin[Any] | SinkPlugin[Any] | CommandPlugin | ServicePlugin) -> str | None:
    """Why ``plugin`` cannot run on this installation (its protocol library is missing), or None."""
    missing = missing_modules(plugin.requires)
    if not missing:
        return None
    what = f"command {plugin.name!r}" if isinstance(plugin, CommandPlugin) else f"type {plugin.kind!r}"
    extra = plugin.extra or (plugin.name if isinstance(plugin, CommandPlugin) else plugin.kind)
    return f"{what} needs {', '.join(missing)}, which is not installed: pip install '{DISTRIBUTION}[{extra}]'"


def _load(group: str, kind: str, expected: type) -> object:
    key = (group, kind)
    if key in _registered:
        return _registered[key]
    if key in _cache:
        return _cache[key]
    eps = _group(group)
    if kind not in eps:
        label = group.rsplit(".", 1)[-1].rstrip("s")
        raise PluginError(f"unknown {label} type {kind!r}; installed: {', '.join(sorted(eps)) or 'none'}")
    obj = eps[kind].load()
    if not isinstance(obj, expected):
        raise PluginError(f"entry point {group}:{kind} is {type(obj).__name__}, not a {expected.__name__}")
    _cache[key] = obj
    return obj


def source_plugin(kind: str) -> SourcePlugin[SourceConfigBase]:
    obj = _load(SOURCES_GROUP, kind, SourcePlugin)
    assert isinstance(obj, SourcePlugin)
    return obj


def sink_plugin(kind: str) -> SinkPlugin[SinkConfigBase]:
    obj = _load(SINKS_GROUP, kind, SinkPlugin)
    assert isinstance(obj, SinkPlugin)
    return obj


def service_plugin(kind: str) -> ServicePlugin:
    obj = _load(SERVICES_GROUP, kind, ServicePlugin)
    assert isinstance(obj, ServicePlugin)
    return obj


def command_plugins() -> list[CommandPlugin]:
    """Every installed CLI plug-in. Loading one imports only its descriptor module."""
    out: list[CommandPlugin] = []
    for name in installed_kinds(COMMANDS_GROUP):
        obj = _load(COMMANDS_GROUP, name, CommandPlugin)
        assert isinstance(obj, CommandPlugin)
        out.append(obj)
    return out
