"""A plan on disk: one gateway config per shard and the manifest (``plan.json``) that ``fleet status`` and the
next ``fleet plan`` read.

A shard is the plant file with only that shard's sources and devices (a source split by device keeps its
name and connection settings with part of its devices, so topics stay the same wherever a device goes),
``gateway.id`` set, its own ``data_dir`` and its own MQTT client ids; the plant's ``simulators:`` are left
out (a fleet collects from the plant's devices). Every shard written is loaded back and validated, and
the device sets are checked to be disjoint and to cover the plant: a device belongs to exactly one shard.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from gateway import __version__
from gateway.config import yaml_events
from gateway.config.loader import GatewayConfig, load_config
from gateway.errors import ConfigError
from gateway.fleet.identity import config_hash
from gateway.fleet.plan import Plan, PlanError, Shard, device_key

MANIFEST = "plan.json"
SCHEMA = 1


class _Dumper(yaml.SafeDumper):
    """Anchors written out in full (a shard is read by people); leaf collections, and every mapping inside a
    list (a tag), in flow style: one line per tag, as plant files are usually written."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class _Flow(dict[Any, Any]):
    pass


_Dumper.add_representer(_Flow, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True))


def _flow_items(obj: Any, in_list: bool = False) -> Any:
    if isinstance(obj, dict):
        inner = {k: _flow_items(v) for k, v in obj.items()}
        return _Flow(inner) if in_list else inner
    if isinstance(obj, list):
        return [_flow_items(v, in_list=True) for v in obj]
    return obj


@dataclass(frozen=True, slots=True)
class Manifest:
    path: Path
    body: dict[str, Any]

    @property
    def gateways(self) -> dict[str, dict[str, Any]]:
        gws = self.body.get("gateways")
        return gws if isinstance(gws, dict) else {}

    def owner(self) -> dict[str, str]:
        """``source.device`` -> gateway id; PlanError when a device is listed under two gateways."""
        out: dict[str, str] = {}
        for gid, gw in self.gateways.items():
            for key in gw.get("devices", []):
                if key in out and out[key] != gid:
                    raise PlanError(f"{self.path}: device {key} is listed under both {out[key]} and {gid}; "
                                    "a device belongs to exactly one gateway (fix the file or plan with --fresh)")
                out[key] = gid
        return out

    def brokers(self) -> list[str]:
        return [b for b in self.body.get("brokers", []) if isinstance(b, str)]


def read_manifest(directory: Path) -> Manifest | None:
    """The plan in ``directory`` (None if there is none); PlanError if it cannot be read."""
    path = directory / MANIFEST
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: not a readable plan ({exc})") from None
    if not isinstance(body, dict) or not isinstance(body.get("gateways"), dict):
        raise PlanError(f"{path}: not a plan written by edge-gateway fleet plan")
    return Manifest(path, body)


def _sink_identity(name: str, kcfg: Any, cfg: GatewayConfig, gateway_id: str) -> tuple[str | None, str | None]:
    """A sink's client id and status topic for this gateway, for sinks that have them (MQTT's ``client_id``
    and ``status_topic``), read from their config fields so the core needs no connector."""
    fields = type(kcfg).model_fields
    client_id = None
    if "client_id" in fields:
        given = kcfg.client_id
        client_id = f"{given}-{gateway_id}" if given else f"edge-gateway-{cfg.site.site}-{gateway_id}-{name}"
    topic = None
    if "status_topic" in fields:
        site = cfg.site
        topic = kcfg.status_topic.format(enterprise=site.enterprise, site=site.site, area=site.area,
                                         line=site.line, gateway=gateway_id)
    return client_id, topic


def _brokers(cfg: GatewayConfig) -> list[str]:
    """``host:port`` of every broker a status-publishing sink (MQTT) names: where ``fleet status`` reads."""
    out: list[str] = []
    for kcfg in cfg.sinks.values():
        if "status_topic" not in type(kcfg).model_fields:
            continue
        endpoints = getattr(kcfg, "endpoints", None)  # a broker cluster's nodes (``hosts``), else host/port
        pairs = endpoints() if callable(endpoints) else [(getattr(kcfg, "host", ""), getattr(kcfg, "port", 0))]
        out += [f"[{h}]:{p}" if ":" in str(h) else f"{h}:{p}" for h, p in pairs]
    return list(dict.fromkeys(out))


def shard_document(raw: Mapping[str, Any], cfg: GatewayConfig, shard: Shard, data_dir: str) -> dict[str, Any]:
    """The plant's document cut down to ``shard`` (``raw`` is the plant file as parsed, ``cfg`` validated)."""
    wanted: dict[str, list[str]] = {}
    for source, device in shard.devices:
        wanted.setdefault(source, []).append(device)
    section = raw.get("gateway")
    doc: dict[str, Any] = {"site": copy.deepcopy(raw["site"])} if "site" in raw else {}
    doc["gateway"] = {"id": shard.id, **({k: v for k, v in section.items() if k != "id"}
                                         if isinstance(section, dict) else {})}
    doc["data_dir"] = data_dir
    for key, value in raw.items():
        if key in ("site", "gateway", "data_dir", "simulators"):
            continue
        body = copy.deepcopy(value)
        if key == "sources":
            body = {name: src for name, src in body.items() if name in wanted}
            for name, src in body.items():
                if isinstance(src.get("devices"), dict):
                    src["devices"] = {d: v for d, v in src["devices"].items() if d in wanted[name]}
        elif key == "sinks":
            for name, sink in body.items():
                client_id, _ = _sink_identity(name, cfg.sinks[name], cfg, shard.id)
                if client_id is not None:
                    sink["client_id"] = client_id
        doc[key] = body
    return doc


def write_plan(plan: Plan, plant: Path, out: Path, *, data_dir: str, previous: Manifest | None) -> Manifest:
    """Write every shard and the manifest into ``out``, check them, and return the manifest.

    ``data_dir`` is a template with ``{id}``. The shards are written and checked beside ``out`` first and
    replace the old ones only once all passed, the manifest last: a failed plan leaves the previous one whole.
    Shard files of a previous plan in ``out`` whose gateway is no longer planned are removed (only files that
    plan listed)."""
    text = plant.read_text(encoding="utf-8")
    raw = yaml_events.load(text) or {}
    cfg = _load(plant)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".plan-", dir=out))
    try:
        body = _write_shards(plan, plant, raw, cfg, out, staging, data_dir)
        for gw in body["gateways"].values():
            (staging / gw["config"]).replace(out / gw["config"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest_path = out / MANIFEST
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    tmp.replace(manifest_path)
    if previous is not None and previous.path.parent.resolve() == out.resolve():
        for gid, gw in previous.gateways.items():
            stale = out / str(gw.get("config", ""))
            if gid not in body["gateways"] and stale.suffix == ".yaml" and stale.parent == out and stale.exists():
                stale.unlink()
    return Manifest(manifest_path, body)


def _write_shards(plan: Plan, plant: Path, raw: Mapping[str, Any], cfg: GatewayConfig, out: Path, staging: Path,
                  data_dir: str) -> dict[str, Any]:
    """Every shard into ``staging``, each loaded back and checked; returns the manifest's body."""
    gateways: dict[str, Any] = {}
    for shard in plan.shards:
        path = staging / f"{shard.id}.yaml"
        doc = shard_document(raw, cfg, shard, data_dir.format(id=shard.id))
        header = (f"# Gateway {shard.id} of {plant.name}: {len(shard.devices)} devices, {shard.tags} tags "
                  f"({len(plan.shards)} gateways, by {plan.by}).\n"
                  f"# Written by `edge-gateway fleet plan` {__version__}: edit the plant file and plan again "
                  "rather than this one\n# (fleet status compares each gateway's config hash with the plan's).\n")
        path.write_text(header + yaml.dump(_flow_items(doc), Dumper=_Dumper, sort_keys=False,
                                           default_flow_style=None, allow_unicode=True, width=4096), encoding="utf-8")
        shard_cfg = _load(path)
        if (empty := shard_cfg.empty_problem()) is not None:
            raise PlanError(empty)
        client_ids: dict[str, str] = {}
        topics: list[str] = []
        for name, kcfg in shard_cfg.sinks.items():
            client_id, topic = _sink_identity(name, kcfg, cfg, shard.id)
            if client_id is not None:
                client_ids[name] = getattr(kcfg, "client_id", client_id)
            if topic is not None:
                topics.append(topic)
        gateways[shard.id] = {
            "config": path.name, "config_hash": config_hash(shard_cfg), "data_dir": shard_cfg.data_dir,
            "devices": [device_key(*d) for d in shard.devices], "units": [u.key for u in shard.units],
            "tags": shard.tags, "values_per_s": round(shard.values_per_s, 3),
            "reads_per_s": round(shard.reads_per_s, 3), "client_ids": client_ids, "status_topics": topics,
        }
        check_disjoint({sid: gw["devices"] for sid, gw in gateways.items()})
        _check_shard(shard_cfg, shard)
    planned = {device_key(*d) for s in plan.shards for d in s.devices}
    plant_devices = {device_key(n, d) for n, scfg in cfg.sources.items() for d in scfg.device_names()}
    if planned != plant_devices:  # a bug, never an input problem: refuse to leave a plan that loses a device
        raise PlanError(f"the plan does not cover the plant: missing {sorted(plant_devices - planned)[:5]}")
    return {
        "schema": SCHEMA, "plant": os.path.relpath(plant, out), "plant_hash": config_hash(cfg), "by": plan.by,
        "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "brokers": _brokers(cfg), "gateways": gateways,
    }


def _load(path: Path) -> GatewayConfig:
    try:
        return load_config(path, env={})  # the file alone: overrides apply on each box
    except ConfigError as exc:
        raise PlanError("; ".join(exc.problems)) from None


def _check_shard(shard_cfg: GatewayConfig, shard: Shard) -> None:
    got = sorted((n, d) for n, scfg in shard_cfg.sources.items() for d in scfg.device_names())
    if got != shard.devices:
        raise PlanError(f"shard {shard.id} does not hold the devices planned for it")


def check_disjoint(devices: Mapping[str, Iterable[str]]) -> None:
    """PlanError naming the first device that two gateways share."""
    seen: dict[str, str] = {}
    for gid, keys in devices.items():
        for key in keys:
            if key in seen and seen[key] != gid:
                raise PlanError(f"device {key} is in two shards ({seen[key]} and {gid}): it would be collected twice")
            seen[key] = gid


def check_configs(paths: Iterable[Path]) -> dict[str, list[str]]:
    """Load gateway configs (shards as deployed, possibly edited by hand) and check that no device is in two
    of them; returns gateway id -> its devices. PlanError on the first problem."""
    devices: dict[str, list[str]] = {}
    client_ids: dict[str, str] = {}
    for path in paths:
        cfg = _load(path)
        gid = cfg.gateway_id()
        if gid in devices:
            raise PlanError(f"{path}: gateway id {gid} is used by two configs")
        devices[gid] = [device_key(n, d) for n, scfg in cfg.sources.items() for d in scfg.device_names()]
        for name, kcfg in cfg.sinks.items():
            client_id = getattr(kcfg, "client_id", "")
            if client_id and client_ids.setdefault(client_id, gid) != gid:
                raise PlanError(f"{path}: sinks.{name}.client_id {client_id} is also {client_ids[client_id]}'s: "
                                "two sessions under one client id throw each other off the broker")
    check_disjoint(devices)
    return devices
