"""The root config: a YAML file plus ``EDGEGW_*`` environment overrides, checked against its plug-ins.

Loading makes two passes over the same input (environment over YAML, deep-merged by pydantic-settings).
A probe reads only the ``type`` of every source and sink, so that just those plug-ins' descriptors are
imported (memory on small boxes); then a root model built over exactly their config models validates
everything. Every problem is reported at once, one ``FILE: dotted.path: message`` line each.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    SerializeAsAny,
    SkipValidation,
    Tag,
    ValidationError,
    create_model,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from gateway.config import yaml_events
from gateway.config.base import NAME_PATTERN, Name, SinkConfigBase, SourceConfigBase, StrictModel
from gateway.config.errors import Origin, format_errors
from gateway.config.site import EmbeddedLineConfig, GatewaySection, HttpConfig, LogConfig, SiteConfig, SpoolConfig
from gateway.errors import ConfigError
from gateway.plugins import (
    SINKS_GROUP,
    SOURCES_GROUP,
    PluginError,
    installed_kinds,
    missing_requirement,
    sink_plugin,
    source_plugin,
)

ENV_PREFIX = "EDGEGW_"
ENV_DELIMITER = "__"
EMBEDDED = "<embedded default>"
"""``GatewayConfig.path`` (and the error prefix) when the embedded default config is used."""

_MAPPING_SECTIONS = frozenset({"site", "gateway", "sources", "sinks", "spool", "http", "log"})


def default_data_dir(env: Mapping[str, str] | None = None) -> str:
    """``$XDG_DATA_HOME/edge-gateway``, else ``~/.local/share/edge-gateway``."""
    xdg = (os.environ if env is None else env).get("XDG_DATA_HOME", "")
    # The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return str(base / "edge-gateway")


class GatewayConfig(StrictModel):
    """The whole gateway config. ``sources``/``sinks`` hold the plug-ins' own config subclasses."""

    def empty_problem(self) -> str | None:
        """Why this config cannot *run* (a config naming only a store still serves ``query``)."""
        if self.sources or self.simulators:
            return None
        return (f"{self.path}: sources: the config names no source, so nothing would be collected; add one "
                "(configs/example.yaml and each connector's sample.yaml show how), or run `edge-gateway run` "
                "without -c for the simulated demo line")

    site: SiteConfig = Field(
        default_factory=SiteConfig, description="where this gateway sits (ISA-95); used by topic templates"
    )
    gateway: GatewaySection = Field(
        default_factory=GatewaySection, description="this gateway's id in a fleet and its status message"
    )
    data_dir: str = Field(
        default_factory=default_data_dir,
        description="where the spool and the embedded store live; "
        "default $XDG_DATA_HOME/edge-gateway or ~/.local/share/edge-gateway",
    )
    sources: dict[str, SerializeAsAny[SourceConfigBase]] = Field(
        default_factory=dict, description="name -> source; `type` picks the plug-in"
    )
    sinks: dict[str, SerializeAsAny[SinkConfigBase]] = Field(
        default_factory=dict, description="name -> sink; `type` picks the plug-in, `sources` what it takes"
    )
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    simulators: dict[Name, EmbeddedLineConfig] = Field(
        default_factory=dict, description="simulated lines served inside this process (demos); name -> line"
    )
    path: str = Field(EMBEDDED, exclude=True, description="the file this config was loaded from")

    def gateway_id(self) -> str:
        """``gateway.id``, else ``<site>-<line>`` made into an id (``plant1-bottling1``)."""
        if self.gateway.id is not None:
            return self.gateway.id
        raw = f"{self.site.site}-{self.site.line}".lower()
        slug = re.sub(r"[^a-z0-9]+", "-", raw).strip("-")
        return slug[:64].strip("-") or "gateway"


# --- settings sources --------------------------------------------------------------------------------


class _EnvSource(EnvSettingsSource):
    """Environment variables from a given mapping; remembers the value whose JSON failed to decode.

    Only public API: the constructor, then ``env_vars`` (the mapping every lookup reads, case-folded as
    the source does with ``case_sensitive=False``) replaced by the given one, and ``decode_complex_value``.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self.bad_json: tuple[str, str, ValueError] | None = None
        super().__init__(settings_cls)
        self.env_vars = {name.lower(): value for name, value in environ.items()}

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError as exc:
            self.bad_json = (field_name, value, exc)
            raise


class _DictSource(PydanticBaseSettingsSource):
    """The parsed YAML document (read by the loader itself, for line numbers and clear file errors)."""

    def __init__(self, settings_cls: type[BaseSettings], data: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = dict(data)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


@dataclass(slots=True)
class _Inputs:
    data: dict[str, Any]
    environ: Mapping[str, str]
    env_source: _EnvSource | None = None


# settings_customise_sources is a classmethod without arguments of ours: the input of the load in
# progress reaches it through this variable.
_inputs: ContextVar[_Inputs] = ContextVar("gateway_config_inputs")


class _SettingsBase(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER, case_sensitive=False, extra="forbid"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        inputs = _inputs.get()
        inputs.env_source = _EnvSource(settings_cls, inputs.environ)
        return (inputs.env_source, _DictSource(settings_cls, inputs.data))  # first wins: env over YAML


class _Probe(_SettingsBase):
    """First pass: which plug-ins the merged config names. Nothing is validated here."""

    model_config = SettingsConfigDict(extra="ignore")

    sources: SkipValidation[dict[str, dict[str, Any]]] = Field(default_factory=dict)
    sinks: SkipValidation[dict[str, dict[str, Any]]] = Field(default_factory=dict)


# --- the root model over the plug-ins in use ---------------------------------------------------------

_Models = tuple[tuple[str, type[BaseModel]], ...]
"""``(kind, config model)`` pairs, sorted: the cache key of a root model."""


def _entry_type(value: Any) -> Any:
    return value.get("type") if isinstance(value, Mapping) else getattr(value, "type", None)


def _entries_type(models: _Models) -> Any:
    """``name -> config`` over the given plug-ins, discriminated by ``type``."""
    if not models:
        return dict[Name, Any]  # every entry already failed the probe; only the names are left to check
    # A callable discriminator with tags works whether a plug-in declares `type` as a Literal or a str.
    union = functools.reduce(operator.or_, (Annotated[model, Tag(kind)] for kind, model in models))
    return dict[Name, Annotated[union, Discriminator(_entry_type)]]  # type: ignore[valid-type]  # built at run time


def _contextual_data_dir() -> str:
    inputs = _inputs.get(None)
    return default_data_dir(None if inputs is None else inputs.environ)


@functools.lru_cache(maxsize=16)
def _root_model(sources: _Models, sinks: _Models) -> type[_SettingsBase]:
    fields: dict[str, Any] = {}
    for name, info in GatewayConfig.model_fields.items():
        if name == "path":
            continue
        if name in ("sources", "sinks"):
            entries = _entries_type(sources if name == "sources" else sinks)
            fields[name] = (entries, Field(default_factory=dict, description=info.description))
        elif name == "data_dir":
            fields[name] = (str, Field(default_factory=_contextual_data_dir, description=info.description))
        else:
            fields[name] = (info.annotation, info)
    model: type[_SettingsBase] = create_model(
        "GatewayConfig", __base__=_SettingsBase, __doc__=GatewayConfig.__doc__, **fields
    )
    return model


# --- loading -----------------------------------------------------------------------------------------


def default_config_text() -> str:
    """The embedded default config (``gateway/default.yaml``)."""
    return resources.files("gateway").joinpath("default.yaml").read_text(encoding="utf-8")


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Load ``path`` (None: the embedded default) with overrides from ``env`` (None: ``os.environ``).

    Raises ConfigError listing every problem found.
    """
    environ = os.environ if env is None else env
    if path is None:
        label, text = EMBEDDED, default_config_text()
    else:
        label = str(path)
        text = _read(Path(path), label)
    inputs = _Inputs(_parse_yaml(text, label), environ)
    origin = Origin.of(label, inputs.data, environ, ENV_PREFIX, ENV_DELIMITER)
    token = _inputs.set(inputs)
    try:
        return _validate(inputs, origin)
    finally:
        _inputs.reset(token)


def _read(path: Path, label: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problem = "no such file"
    except IsADirectoryError:
        problem = "is a directory, not a config file"
    except UnicodeDecodeError:
        problem = "not a UTF-8 text file"
    except OSError as exc:
        problem = f"cannot read: {exc.strerror or exc}"
    raise ConfigError([f"{label}: {problem}"])


def _parse_yaml(text: str, label: str) -> dict[str, Any]:
    try:
        doc = yaml_events.load(text)  # safe: plain data only, duplicate keys refused
    except yaml_events.DuplicateKey as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise ConfigError([f"{label}:{line}: {exc.problem}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{label}:{mark.line + 1}" if mark else label
        problem = exc.problem or exc.context
        if exc.problem and exc.context and exc.context_mark and mark and exc.context_mark.line != mark.line:
            # e.g. an unclosed bracket: PyYAML notices it lines later, the context says where it opened
            problem = f"{problem} ({exc.context} on line {exc.context_mark.line + 1})"
        raise ConfigError([f"{where}: YAML syntax error: {problem}"]) from None
    except yaml.YAMLError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError([f"{label}: YAML syntax error: {first_line}"]) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        what = {list: "a list", str: "a string", bool: "a boolean"}.get(type(doc), "a single value")
        raise ConfigError([
            f"{label}: expected a mapping of sections (site, data_dir, sources, sinks, spool, http, log) "
            f"at the top level, found {what}"
        ])
    # A section whose entries are all commented out parses as null: read it as empty. Keys become
    # keyword arguments of the settings class, so a stray `1:` must be a string to be reported.
    return {str(k): v for k, v in doc.items() if not (v is None and k in _MAPPING_SECTIONS)}


_PLUGIN_LOOKUP: dict[str, tuple[str, str, Callable[[str], Any]]] = {
    "sources": ("source", SOURCES_GROUP, source_plugin),
    "sinks": ("sink", SINKS_GROUP, sink_plugin),
}


def _validate(inputs: _Inputs, origin: Origin) -> GatewayConfig:
    problems: list[str] = []
    try:
        probe = _Probe()
    except SettingsError as exc:
        raise ConfigError([_env_problem(exc, inputs, origin)]) from None
    used = {section: _used_models(section, getattr(probe, section), origin, problems) for section in _PLUGIN_LOOKUP}
    root = _root_model(used["sources"], used["sinks"])
    try:
        settings = root()
    except SettingsError as exc:
        raise ConfigError([*problems, _env_problem(exc, inputs, origin)]) from None
    except ValidationError as exc:
        errors = [e for e in exc.errors(include_url=False) if not _reported_by_probe(e)]
        raise ConfigError([*problems, *format_errors(errors, root, origin)]) from None
    if problems:
        raise ConfigError(problems)
    values = {name: getattr(settings, name) for name in type(settings).model_fields}
    return GatewayConfig(path=origin.file, **values)


def _used_models(section: str, entries: object, origin: Origin, problems: list[str]) -> _Models:
    """Load the config models of the plug-in kinds ``section`` names; report entries without one."""
    label, group, lookup = _PLUGIN_LOOKUP[section]
    models: dict[str, type[BaseModel]] = {}
    if not isinstance(entries, Mapping):
        return ()  # the root model reports the wrong shape
    installed = ", ".join(installed_kinds(group)) or "none"
    for name, entry in entries.items():
        where = (section, name, "type")
        if not isinstance(entry, Mapping):
            message = f"expected a mapping with a 'type' key ({label} types: {installed})"
            problems.append(origin.line(where[:2], message))
            continue
        kind = entry.get("type")
        if kind is None:
            problems.append(origin.line(where, f"Field required; installed {label} types: {installed}"))
        elif not isinstance(kind, str):
            problems.append(origin.line(where, f"expected the name of a {label} type; installed: {installed}"))
        elif kind not in models:
            try:
                plugin = lookup(kind)
                models[kind] = plugin.config_model
                if (missing := missing_requirement(plugin)) is not None:
                    problems.append(origin.line(where, f"{label} {missing}"))
            except PluginError as exc:
                problems.append(origin.line(where, str(exc)))
            except Exception as exc:  # a broken plug-in must not turn `validate` into a traceback
                problems.append(origin.line(where, f"{label} plug-in {kind!r} failed to load: {exc!r}"))
    return tuple(sorted(models.items()))


def _reported_by_probe(err: ErrorDetails) -> bool:
    loc = err["loc"]
    return len(loc) == 2 and loc[0] in _PLUGIN_LOOKUP and err["type"] in ("union_tag_invalid", "union_tag_not_found")


def _env_problem(exc: SettingsError, inputs: _Inputs, origin: Origin) -> str:
    """A variable holding a list or mapping must be JSON; name the one that is not."""
    bad = inputs.env_source.bad_json if inputs.env_source else None
    if bad is not None:
        key, value, err = bad
        detail = f"{err.msg} at column {err.colno}" if isinstance(err, json.JSONDecodeError) else str(err)
        for path, (name, raw) in origin.env.items():
            if path[-1] == key.lower() and raw == value:
                dotted = ".".join(path)
                return f"{name}: {dotted}: invalid JSON ({detail}); lists and mappings are written as JSON here"
    return f"environment: {exc}"


# --- JSON Schema -------------------------------------------------------------------------------------


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of the whole config with every installed plug-in (all of them are imported)."""
    used: dict[str, _Models] = {}
    for section, (_, group, lookup) in _PLUGIN_LOOKUP.items():
        models: list[tuple[str, type[BaseModel]]] = []
        for kind in installed_kinds(group):
            try:
                models.append((kind, lookup(kind).config_model))
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(f"{group}:{kind} failed to load: {exc!r}") from exc
        used[section] = tuple(models)
    schema = _root_model(used["sources"], used["sinks"]).model_json_schema()
    for section, models_ in used.items():
        _mark_discriminator(schema, section, models_)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _mark_discriminator(schema: dict[str, Any], section: str, models: _Models) -> None:
    """Pydantic writes a callable-discriminated union as a bare oneOf; give editors the `type` mapping."""
    section_schema = schema["properties"][section]
    section_schema["additionalProperties"] = False  # keys must match the name pattern
    value_schema = section_schema.get("patternProperties", {}).get(NAME_PATTERN, {})
    refs = value_schema.get("oneOf", [])
    if len(refs) != len(models):
        return
    mapping: dict[str, str] = {}
    for (kind, _), ref in zip(models, refs, strict=True):
        mapping[kind] = ref["$ref"]
        props = schema["$defs"][ref["$ref"].rsplit("/", 1)[-1]].setdefault("properties", {})
        props.setdefault("type", {"type": "string"}).setdefault("const", kind)
    value_schema["discriminator"] = {"propertyName": "type", "mapping": mapping}
